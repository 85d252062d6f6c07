"""Tests for the tiny offline world's review corpus (rlhf_lab.world.corpus, .gold, .tasks)."""

from __future__ import annotations

import random
import statistics
from pathlib import Path

import pytest
import vaderSentiment
from vaderSentiment.vaderSentiment import BOOSTER_DICT

from rlhf_lab.world import lexicon
from rlhf_lab.world.corpus import corpus_stats, generate_documents, sentence, split_sentences, words
from rlhf_lab.world.gold import gold_score
from rlhf_lab.world.tasks import make_prompts, make_sft_pairs, split_prompt

N_DOCUMENTS = 40_000


def _vader_lexicon() -> dict[str, float]:
    path = Path(vaderSentiment.__file__).with_name("vader_lexicon.txt")
    entries = (line.split("\t") for line in path.read_text(encoding="utf-8").splitlines())
    return {entry[0]: float(entry[1]) for entry in entries if len(entry) > 1}


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return generate_documents(N_DOCUMENTS, seed=0)


@pytest.fixture(scope="module")
def stats(corpus) -> dict:
    """Stats of the first 10,000 documents (VADER over all 40,000 would take ~8 s)."""
    return corpus_stats(corpus[:10_000])


def test_same_seed_same_corpus_and_different_seeds_differ():
    assert generate_documents(300, seed=3) == generate_documents(300, seed=3)
    assert generate_documents(300, seed=3) != generate_documents(300, seed=4)


def test_prefix_property():
    assert generate_documents(1_000, seed=7)[:250] == generate_documents(250, seed=7)


def test_generation_leaves_global_rng_alone():
    random.seed(123)
    expected = random.random()
    random.seed(123)
    generate_documents(50, seed=1)
    assert random.random() == expected


def test_scale(corpus):
    sentences = [s for document in corpus for s in split_sentences(document)]
    vocabulary = {word for document in corpus for word in words(document)}
    assert len(set(sentences)) >= 50_000
    assert len(vocabulary) >= 1_000


def test_corpus_stats(corpus, stats):
    documents = corpus[:10_000]
    sentences = [s for document in documents for s in split_sentences(document)]
    assert stats["documents"] == len(documents)
    assert stats["sentences"] == len(sentences) > stats["distinct_sentences"] > 0.7 * len(sentences)
    assert stats["vocabulary"] == len({word for d in documents for word in words(d)})


def test_gold_reward_spread(stats):
    assert stats["gold_std"] >= 0.5
    assert -0.2 <= stats["gold_mean"] <= 0.2


def test_documents_are_well_formed(corpus):
    for document in corpus[:5_000]:
        assert document.isascii()
        assert "  " not in document and document == document.strip()
        sentences = split_sentences(document)
        assert 1 <= len(sentences) <= 4
        for text in sentences:
            assert text[0].isupper() and text[-1] in ".!"
            assert 5 <= len(text.split()) <= 20


def test_sentiment_words_have_lexicon_sign():
    vader = _vader_lexicon()
    for word in lexicon.SENTIMENT_WORDS["positive"]:
        assert vader.get(word, 0.0) > 0, word
    for word in lexicon.SENTIMENT_WORDS["negative"]:
        assert vader.get(word, 0.0) < 0, word


def test_neutral_words_are_not_in_lexicon():
    vader = _vader_lexicon()
    for name, phrases in lexicon.NEUTRAL_WORD_LISTS.items():
        scored = [p for p in phrases if any(t in vader for t in p.lower().split())]
        assert not scored, f"{name}: {scored}"


def test_word_lists_are_clean_single_spaced_phrases():
    lists = {k: v for k, v in vars(lexicon).items() if k.isupper() and isinstance(v, tuple)}
    for name, phrases in lists.items():
        assert len(set(phrases)) == len(phrases), name
        assert all(p == " ".join(p.split()) and p.isascii() for p in phrases), name


def test_modifiers_are_vader_boosters_and_dampeners():
    assert all(BOOSTER_DICT.get(word, 0) > 0 for word in lexicon.INTENSIFIERS)
    assert all(BOOSTER_DICT.get(word, 0) < 0 for word in lexicon.DAMPENERS)


def test_corpus_has_negations_intensifiers_and_conjunctions(corpus):
    vocabulary = {word for document in corpus for word in words(document)}
    assert set(lexicon.NEGATIONS) <= vocabulary
    assert set(lexicon.INTENSIFIERS) <= vocabulary
    assert set(lexicon.CONTRAST_CONJUNCTIONS) | {"and"} <= vocabulary
    assert any(", but the " in document for document in corpus)


@pytest.mark.parametrize("polarity", ["pos", "neg"])
def test_polar_sentences_score_with_their_sign(polarity):
    rng = random.Random(11)
    scores = gold_score([sentence(rng, polarity) for _ in range(2_000)])
    sign = 1 if polarity == "pos" else -1
    assert sum(sign * s > 0 for s in scores) >= 0.95 * len(scores)
    assert not any(sign * s < 0 for s in scores)


def test_mixed_sentences_mostly_follow_their_final_clause():
    rng = random.Random(12)
    positive = gold_score([sentence(rng, "pos", mixed=True) for _ in range(1_000)])
    negative = gold_score([sentence(rng, "neg", mixed=True) for _ in range(1_000)])
    assert sum(s > 0 for s in positive) >= 700
    assert sum(s < 0 for s in negative) >= 600


def test_neutral_sentences_score_zero():
    rng = random.Random(13)
    assert set(gold_score([sentence(rng, "neu") for _ in range(2_000)])) == {0.0}


def test_sentiment_within_a_document_is_correlated(corpus):
    documents = [d for d in corpus[:4_000] if len(split_sentences(d)) >= 2]
    openings = gold_score([split_sentences(d)[0] for d in documents])
    rests = gold_score([" ".join(split_sentences(d)[1:]) for d in documents])
    assert statistics.correlation(openings, rests) > 0.3


def test_split_prompt_invariants(corpus):
    rng = random.Random(5)
    for document in corpus[:3_000]:
        prompt, continuation = split_prompt(document, rng, min_words=2, max_words=6)
        assert prompt + continuation == document
        assert continuation.startswith(" ") and continuation.strip()
        assert 2 <= len(prompt.split()) <= 6


def test_split_prompt_never_takes_the_whole_document():
    rng = random.Random(0)
    for _ in range(50):
        prompt, continuation = split_prompt("A very short review.", rng, 2, 8)
        assert len(prompt.split()) <= 3 and continuation.strip()
    with pytest.raises(ValueError):
        split_prompt("Superb.", rng)


def test_prompts_and_sft_pairs(corpus):
    documents = corpus[:2_000]
    pairs = make_sft_pairs(documents, seed=1)
    assert [p["prompt"] + p["completion"] for p in pairs] == documents
    prompts = make_prompts(documents, seed=1)
    assert prompts == make_prompts(documents, seed=1) != make_prompts(documents, seed=2)
    for prompt, document in zip(prompts, documents, strict=True):
        assert document.startswith(prompt) and 2 <= len(prompt.split()) <= 6


def test_gold_score_is_vader_compound():
    positive, negative, neutral = gold_score(["I loved it!", "I hated it.", "It runs two hours."])
    assert positive > 0 > negative and neutral == 0.0
    assert gold_score([]) == []
