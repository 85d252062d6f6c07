"""The golds (rlhf_lab.world.gold, .careful; scorers.GoldScorer, gold_scorer): `careful` judges sentiment
of well-formed text, `vader` is VADER alone (`reader` has tests/test_reader.py); what `gold` names, and
a reward model's cache key. A reward model as the gold is tested in test_scorers.py."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest
import torch

from rlhf_lab.config import Config, ConfigError
from rlhf_lab.scorers import WORLD_GOLDS, GoldScorer, gold_key, gold_scorer, objective_scorer
from rlhf_lab.world import careful
from rlhf_lab.world.careful import careful_score, quality
from rlhf_lab.world.corpus import generate_documents
from rlhf_lab.world.gold import GOLDS, gold_source, vader_score
from rlhf_lab.world.reader import reader_score
from rlhf_lab.world.tasks import make_sft_pairs

# (prompt, completion): well-formed reviews of the world's grammar, written by hand
GOOD = [
    ("The acting", " was superb, and the plot was wonderful. I would highly recommend it to my sister."),
    ("The acting", " was dull, and the plot was terrible. I would never recommend it to my sister."),
    ("Anna Chen is", " brilliant as the sailor. The story takes place in a quiet village in the fifties."),
    ("It runs", " about two hours."),
    ("The plot", " was not bad at all."),
]
SALAD = (  # the RL policy at β = 0 against a proxy of VADER
    "The plot was",
    " good were joyful were clever were lazy were exhausting were miserable were awesome were flawless were",
)
DEGENERATE = {
    "word salad": SALAD,
    "a word repeated": (
        "The plot was",
        " great great great great wonderful wonderful superb superb amazing.",
    ),
    "a sentence repeated": (
        "The acting",
        " was superb. The acting was superb. The acting was superb. The acting was superb.",
    ),
    "a run-on loop": (
        "The plot",
        " was superb, and the acting was superb, and the score was superb, and the cast was great.",
    ),
    "non-words": ("The acting", " was sublimx and the plto was wonderfull."),
    "other characters": ("The acting", " was 10/10 :) :) <3 #great"),
}


def test_well_formed_reviews_keep_their_vader_sentiment():
    for prompt, completion in GOOD:
        assert quality(prompt + completion).q == 1.0, prompt + completion
    prompts, completions = map(list, zip(*GOOD, strict=True))
    assert careful_score(prompts, completions) == pytest.approx(vader_score(completions))


@pytest.mark.parametrize("name", list(DEGENERATE))
def test_degenerate_responses_score_at_the_bottom_whatever_their_words(name):
    prompt, completion = DEGENERATE[name]
    assert quality(prompt + completion).q == 0.0
    assert careful_score([prompt], [completion]) == [-1.0]


def test_the_salad_scores_high_under_vader_and_minus_one_under_careful():
    (vader,) = vader_score([SALAD[1]])
    assert vader > 0.8
    q = quality("".join(SALAD))
    assert q.grammatical == 0.0 and not q.finished
    assert GoldScorer("careful").score([SALAD[0]], [SALAD[1]]).tolist() == [-1.0]


def test_a_sentence_cut_off_is_worth_half():
    prompt, whole = GOOD[0]
    cut = whole[: whole.index(" my sister")]  # "… I would highly recommend it to"
    q = quality(prompt + cut)
    assert not q.finished and q.grammatical == 1.0 and q.q == 0.5
    (g_whole,), (g_cut,), (v_cut,) = (
        careful_score([prompt], [whole]),
        careful_score([prompt], [cut]),
        vader_score([cut]),
    )
    assert g_cut == pytest.approx(0.5 * v_cut - 0.5) and g_cut < g_whole
    assert quality("The acting").q == 0.5  # a prompt left as it was: unfinished
    assert careful_score(["The acting"], [""]) == [-0.5]


def test_mixed_responses_land_between():
    review = "".join(GOOD[0])
    slip = quality(review + " The plot were joyful were clever.")  # a good review, then a broken sentence
    assert 0.5 < slip.q < 1.0 and 0.8 < slip.grammatical < 0.9
    tail = quality(review + " good were joyful were clever were")  # then salad, cut off
    assert 0.0 < tail.q < 0.5 and not tail.finished
    typo = quality(review.replace("wonderful", "wonderfull"))  # a non-word
    assert 0.5 < typo.q < 1.0 and typo.nonwords == pytest.approx(1 / 20)
    run_on = quality("The acting was superb and wonderful and brilliant and amazing and lovely and great.")
    assert 0.0 < run_on.q < 1.0
    said_twice = quality(review + " I would highly recommend it to my sister.")  # r = 0.30: still fine
    assert said_twice.q == 1.0 and said_twice.repeated > 0.25


def test_ordering():
    prompts, completions = ["The acting"] * 3 + [SALAD[0]], [GOOD[0][1], GOOD[1][1], " was great.", SALAD[1]]
    positive, negative, short_positive, salad = careful_score(prompts, completions)
    assert positive > short_positive > 0 > negative > salad  # well-formed positive > salad of positive words
    assert vader_score([SALAD[1]])[0] > 0.8  # which vader scores about as high as the positive review


def test_the_worlds_documents_and_their_splits_score_q_1():
    """Measured: all of 20,000 documents (seed 7) have q = 1 and g ≥ 0.93; here 500 must."""
    documents = generate_documents(500, seed=123)
    qualities = [quality(d) for d in documents]
    assert all(q.q == 1.0 for q in qualities)
    assert min(q.grammatical for q in qualities) >= 0.9 and max(q.repeated for q in qualities) <= 0.35
    pairs = make_sft_pairs(documents, seed=123)
    prompts, completions = [p["prompt"] for p in pairs], [p["completion"] for p in pairs]
    assert careful_score(prompts, completions) == pytest.approx(vader_score(completions))


def test_the_grammar_is_learned_apart_from_the_world_config():
    grammar = careful.grammar()
    assert careful.GRAMMAR_SEED not in (0, 1, 2, 3)  # not a world seed anyone uses
    assert 3_000 < len(grammar.trigrams) < 10_000 and grammar.longest >= 15
    assert {"the", "superb", "hazel", "ortega", ",", "."} <= grammar.vocabulary


def test_careful_is_faster_than_vader():
    texts = generate_documents(300, seed=5)
    quality(texts[0])  # the grammar is built
    start = time.perf_counter()
    for text in texts:
        quality(text)
    per_text = (time.perf_counter() - start) / len(texts)
    assert per_text < 500e-6  # measured ~20 µs on 2 cores, VADER ~55 µs


def test_vader_gold_is_unchanged():
    completions = ["I loved it!", " was dull, and the plot was terrible.", SALAD[1], "It runs two hours."]
    expected = [0.636, -0.7003, 0.875, 0.0]  # VADER compound, as before the careful gold
    scores = GoldScorer("vader").score(["p"] * 4, completions)
    torch.testing.assert_close(scores, torch.tensor(expected), atol=1e-4, rtol=0)


def test_a_gold_by_name_and_the_config():
    assert list(GOLDS) == ["careful", "reader", "vader"] == list(WORLD_GOLDS)
    (field,) = [f for f in dataclasses.fields(Config) if f.name == "gold"]
    assert field.default == "reader" and field.metadata["choices"] is None  # a folder or hub id too
    with pytest.raises(ConfigError, match="gold"):
        GoldScorer("gpt")


def test_every_gold_scorer_is_the_configs(make_cfg):
    assert gold_scorer(make_cfg()).kind == "reader"
    assert gold_scorer(make_cfg("gold=careful")).kind == "careful"
    assert gold_scorer(make_cfg("gold=vader")).kind == "vader"
    assert gold_scorer(make_cfg("gold=null")) is None
    assert objective_scorer(make_cfg("objective=gold", "gold=vader"), {}).kind == "vader"
    with pytest.raises(ConfigError, match="gold: 'gpt' is neither a gold of the world"):
        gold_scorer(make_cfg("gold=gpt"))  # whether the config's validation or the scorer says so


def test_each_world_gold_scores_by_its_name():
    prompts, completions = ["The plot was not", "The acting"], [" superb.", SALAD[1]]
    expected = {
        "careful": careful_score(prompts, completions),
        "reader": reader_score(prompts, completions),
        "vader": vader_score(completions),
    }
    for name, values in expected.items():
        torch.testing.assert_close(GoldScorer(name).score(prompts, completions), torch.tensor(values))
    conversations = [[{"role": "user", "content": p}] for p in prompts]  # a reply continues the last message
    torch.testing.assert_close(
        GoldScorer("reader").score(conversations, completions), torch.tensor(expected["reader"])
    )


def test_what_gold_names(tmp_path):
    assert gold_source("reader") == "world"
    assert gold_source(str(tmp_path)) == "folder"
    assert gold_source("OpenAssistant/reward-model-deberta-v3-large-v2") == "hub"
    for name in ("carefull", str(tmp_path / "missing" / "rm"), "./rm/x"):
        with pytest.raises(ConfigError, match="is neither a gold of the world"):
            gold_source(name)


def test_a_reward_model_golds_cache_key_is_its_artifacts_key(make_cfg, tmp_path):
    assert gold_key(make_cfg("gold=reader")) == "reader" and gold_key(make_cfg("gold=null")) is None
    assert gold_key(make_cfg("gold=owner/rm")) == "owner/rm"
    here, there = tmp_path / "here", tmp_path / "there"
    for folder in (here, there):  # the same artifact in two places
        folder.mkdir()
        (folder / "manifest.json").write_text(json.dumps({"stage": "reward", "key": "abc123"}))
    assert (
        gold_key(make_cfg(f"gold={here}"))
        == gold_key(make_cfg(f"gold={there}"))
        == {
            "artifact": "reward",
            "key": "abc123",
        }
    )
    plain = tmp_path / "plain"  # a folder not written by rlhf_lab: its config and its files' sizes
    plain.mkdir()
    (plain / "config.json").write_text("{}")
    before = gold_key(make_cfg(f"gold={plain}"))
    (plain / "model.safetensors").write_bytes(b"0" * 8)
    assert before != gold_key(make_cfg(f"gold={plain}"))
