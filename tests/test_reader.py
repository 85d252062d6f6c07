"""The `reader` gold (rlhf_lab.world.reader): a careful reader's score, each flaw costing by degrees.

Hand-written texts in the world's language against the world's own reviews, generated here. The
numbers the module docstring and the report quote come from

    pytest tests/test_reader.py -q -s -k measured
"""

from __future__ import annotations

import random
import statistics
import time

import pytest

from rlhf_lab.world import reader
from rlhf_lab.world.careful import careful_score
from rlhf_lab.world.corpus import generate_documents, split_sentences
from rlhf_lab.world.gold import vader_score
from rlhf_lab.world.reader import read, reader_score
from rlhf_lab.world.tasks import make_sft_pairs

# (prompt, completion), each grammatical in the world's grammar and made of its words
FLUENT = {
    "positive": (
        "Hazel Ortega is",
        " superb as the sailor. I loved the plot in The Silver Harbor. It was a delightful masterpiece "
        "from start to finish.",
    ),
    "positive, other frames": (
        "The cinematography",
        " was gorgeous, and the score was wonderful. Omar Petrov gives a brilliant performance as the "
        "pilot. I would highly recommend it to my sister.",
    ),
    "negative": (
        "The acting",
        " was dull, and the plot was terrible. I would never recommend it to my uncle.",
    ),
    "neutral": (
        "The film follows",
        " a young sailor who finds a map in a quiet village. It runs about two hours.",
    ),
}
# one sentence frame said again with other words (none of them the "made me cheer")
FRAMES = {
    "the _ was _ overall": (
        "The acting",
        " was superb overall. The plot was brilliant overall. The score was wonderful overall. The "
        "pacing was lovely overall.",
    ),
    "_ is _ as the _": (
        "Anna Chen is",
        " superb as the sailor. Omar Petrov is brilliant as the pilot. Ruth Novak is wonderful as the "
        "nurse. Karim Sato is amazing as the baker.",
    ),
    "i _ the _ in _": (
        "I loved the",
        " acting in The Silver Harbor. I adored the plot in Blue Orchard. I enjoyed the score in The "
        "Crown. I admired the finale in The Last Bridge.",
    ),
    "the _ left me _": (
        "The score",
        " left me thrilled. The ending left me delighted. The cast left me happy. The pacing left me amazed.",
    ),
    "varied ends": (
        "The plot",
        " was really brilliant throughout. The acting was superb in The Tower! The music was extremely "
        "lovely overall. The ending was wonderful throughout.",
    ),
}
DEGENERATE = {
    "word salad": (
        "The plot was",
        " superb wonderful was the the brilliant great acting was was lovely and.",
    ),
    "a word repeated": ("The acting", " was great great great great great wonderful wonderful superb."),
    "a sentence said four times": (
        "The plot",
        " was superb overall. The plot was superb overall. The plot was superb overall. The plot was "
        "superb overall.",
    ),
    "non-words": ("The score", " was wonderfull and the plto was brillant, and the actng was supreb."),
    "other characters": ("The ending", " was 10/10 :) :) <3 #wow!!!"),
    "clauses chained": (
        "The acting",
        " was superb, and the plot was wonderful, and the score was brilliant, and the cast was lovely.",
    ),
}
GOOD = "".join(FLUENT["positive"])
MIXED = {  # a fluent review, then one flaw
    "a broken sentence": (GOOD, " The score were joyful were clever."),
    "a frame said three times": (
        GOOD,
        " The acting was superb overall. The score was brilliant overall. The ending was lovely overall.",
    ),
    "a typo": (GOOD.replace("delightful", "delightfull"), ""),
    "cut off": (GOOD, " I would highly recommend it to"),
}


def _scores(texts: dict) -> dict[str, float]:
    return {name: read(p, c).score for name, (p, c) in texts.items()}


@pytest.fixture(scope="module")
def world_reviews():
    """The world's own reviews as prompt/completion splits (world.tasks), and those VADER rates clearly
    positive (compound >= 0.5 on the whole review)."""
    documents = generate_documents(600, seed=2024)
    pairs = make_sft_pairs(documents, seed=2024)
    splits = [(p["prompt"], p["completion"]) for p in pairs]
    positive = [s for s, v in zip(splits, vader_score(documents), strict=True) if v >= 0.5]
    return splits, positive


def test_frames_score_below_the_median_of_the_worlds_clearly_positive_reviews_and_degenerate_lower(
    world_reviews,
):
    _, positive = world_reviews
    median = statistics.median(reader_score(*map(list, zip(*positive, strict=True))))
    frames, degenerate = _scores(FRAMES), _scores(DEGENERATE)
    assert max(frames.values()) < median - 0.2, (frames, median)
    assert max(degenerate.values()) < min(frames.values()), (degenerate, frames)
    # which `careful` rates above the median, as the issue found
    careful = careful_score(*map(list, zip(*FRAMES.values(), strict=True)))
    assert min(careful) > median + 0.3


def test_fluent_reviews_keep_their_sentiment_and_no_flaw():
    for name, (prompt, completion) in FLUENT.items():
        r = read(prompt, completion)
        assert r.q > 0.99 and (r.slips, r.nonwords, r.ignored, r.strange, r.repeated) == (0, 0, 0, 0, 0), name
    scores = _scores(FLUENT)
    assert scores["positive"] > 0.6 and scores["positive, other frames"] > 0.6
    assert scores["negative"] < -0.3 and scores["neutral"] == 0.0
    assert min(_scores(FRAMES).values()) > -0.5 > max(_scores(DEGENERATE).values())


def test_each_flaw_costs_by_degrees_and_distinct_flaws_score_distinctly():
    scores = {**_scores(FLUENT), **_scores(FRAMES), **_scores(DEGENERATE), **_scores(MIXED)}
    assert all(-1 < s <= 1 for s in scores.values()), scores  # no floor: not even word salad is -1
    flaws = [*DEGENERATE, *MIXED, "the _ was _ overall"]  # each a different flaw
    assert len({round(scores[name], 3) for name in flaws}) == len(flaws)
    good = scores["positive"]
    assert all(-0.5 < scores[name] < good for name in MIXED), scores  # a fluent review, then one flaw
    assert scores["a typo"] > scores["a broken sentence"]


def test_a_frame_said_again_and_again_declines_gradually():
    fillers = [("plot", "brilliant"), ("score", "wonderful"), ("pacing", "lovely"), ("ending", "superb")]
    fillers += [("cast", "delightful"), ("script", "charming")]
    scores = [
        read(
            "The acting",
            " was superb overall." + "".join(f" The {a} was {b} overall." for a, b in fillers[:n]),
        )
        for n in range(7)
    ]
    qs = [r.q for r in scores]
    assert qs[0] == 1.0 and all(a > b for a, b in zip(qs, qs[1:], strict=False))
    assert qs[1] > 0.85 and qs[3] < 0.45  # said twice costs little, four times much
    steps = [a.score - b.score for a, b in zip(scores[1:], scores[2:], strict=False)]
    assert all(0 < d < 0.4 for d in steps)  # the score falls each time, never off a cliff
    assert scores[-1].score > -0.9


def test_praise_saturates():
    assert reader._saturating([0.8]) == pytest.approx(0.6 * 0.8)
    totals = [reader._saturating([0.8] * n) for n in range(1, 8)]
    gains = [b - a for a, b in zip(totals, totals[1:], strict=False)]
    assert all(g2 == pytest.approx(0.4 * g1) for g1, g2 in zip(gains, gains[1:], strict=False))
    assert totals[-1] < 0.8  # never above the sentences' own valence, however many
    # and criticism is read the same way and subtracted; order does not matter
    assert reader.sentiment("The plot was superb overall. The acting was dull overall.") == pytest.approx(
        reader.sentiment("The acting was dull overall. The plot was superb overall.")
    )
    piled = read(*FRAMES["the _ was _ overall"])
    assert piled.sentiment < vader_score([FRAMES["the _ was _ overall"][1]])[0] - 0.3


def test_a_completion_that_ignores_or_contradicts_its_prompt_scores_lower():
    prompt = "Hazel Ortega is"
    continues = read(prompt, " superb as the sailor. I loved the plot in The Silver Harbor.")
    ignores = read(prompt, ". The acting was superb overall. I loved the plot in The Silver Harbor.")
    assert continues.ignored == 0 and ignores.ignored == 2 and ignores.score < continues.score - 0.5
    turned = read("The plot was dull", " and superb.")  # no contrast word: the grammar keeps polarities apart
    kept = read("The plot was dull", " and boring.")
    assert turned.ignored > 0 == kept.ignored and turned.q < kept.q
    negated = ("The acting was not", " superb.")  # the prompt's negation is read with the completion
    assert read(*negated).score < 0 < careful_score(*map(list, zip(negated, strict=True)))[0]
    # a prompt that ends its sentence has no junction to break
    assert read("It runs about two hours.", " I loved the plot in The Silver Harbor.").ignored == 0


def test_the_worlds_reviews_are_read_as_fluent(world_reviews):
    splits, _ = world_reviews
    readings = [read(p, c) for p, c in splits]
    assert sum(r.slips == 0 and r.strange == 0 for r in readings) >= 0.99 * len(readings)
    assert sum(r.q < 0.85 for r in readings) <= 0.05 * len(readings)  # a template reused now and then
    prompts, completions = map(list, zip(*splits, strict=True))
    mean = statistics.fmean(r.score for r in readings)
    assert abs(mean - statistics.fmean(careful_score(prompts, completions))) < 0.1


def test_sentences_without_vader_words_are_skipped_as_zero():
    sentences = [s for d in generate_documents(400, seed=8) for s in split_sentences(d)]
    skipped = [s for s in sentences if reader._unscored(s)]
    assert len(skipped) > 0.15 * len(sentences)
    assert vader_score(skipped) == [0.0] * len(skipped)
    assert not any(map(reader._unscored, ["I loved it.", "It is good :)", "No.", "It runs <3 hours."]))


def test_the_worlds_frames():
    frames = reader.world_frames()
    assert 60 < len(frames) < 120  # the world writes ~83 frames, from its templates
    assert reader.skeleton(("the", "camera", "work", "was", "extremely", "superb", "!")) == (
        "the",
        "_",
        "was",
        "_",
        ".",
    )
    assert reader.strangeness(("the", "_", "was", "_", "overall", ".")) == 0
    assert reader.strangeness(("the", "_", "was", "_", ".")) == 1  # one edit from a world frame
    assert reader.similarity(
        ("the", "_", "was", "_", "."), ("the", "_", "was", "_", "overall", ".")
    ) == pytest.approx(5 / 6)


def _texts_per_second(splits) -> dict[str, float]:
    """Each gold's texts per second on `splits`, the best of 3 rounds; the reader's caches cleared, then
    warmed on other texts, as in a run that has scored a few batches."""
    prompts, completions = map(list, zip(*splits, strict=True))
    for cached in (reader._valence, reader.skeleton, reader.similarity, reader.strangeness):
        cached.cache_clear()
    warm = make_sft_pairs(generate_documents(300, seed=9), seed=9)
    reader_score([p["prompt"] for p in warm], [p["completion"] for p in warm])
    careful_score(prompts[:5], completions[:5])
    times = {"reader": [], "careful": []}
    for _ in range(3):
        for name, score in (("reader", reader_score), ("careful", careful_score)):
            start = time.perf_counter()
            score(prompts, completions)
            times[name].append(time.perf_counter() - start)
            if name == "reader":  # each round reads the texts anew
                reader._valence.cache_clear()
                reader.skeleton.cache_clear()
    return {name: len(prompts) / min(t) for name, t in times.items()}


def _shuffled(splits, seed: int = 0) -> list[tuple[str, str]]:
    """The completions' words in random order: what a policy drifting into word salad writes."""
    rng = random.Random(seed)
    return [(p, " " + " ".join(rng.sample(c.split(), len(c.split())))) for p, c in splits]


@pytest.mark.parametrize("texts", ["the world's reviews", "their words shuffled"])
def test_the_reader_costs_about_as_much_as_careful(world_reviews, texts):
    """Measured 1.6-2x careful's time per text on either (2 shared cores)."""
    splits = world_reviews[0] if texts == "the world's reviews" else _shuffled(world_reviews[0])
    speed = _texts_per_second(splits)
    assert speed["reader"] > speed["careful"] / 3


def test_measured(world_reviews):
    """Print what the report quotes (run with -s)."""
    splits, positive = world_reviews
    prompts, completions = map(list, zip(*splits, strict=True))
    positive_scores = reader_score(*map(list, zip(*positive, strict=True)))
    print(
        f"\nworld's clearly positive reviews (n={len(positive)}): median "
        f"{statistics.median(positive_scores):.3f}, mean {statistics.fmean(positive_scores):.3f}"
    )
    for group in (FRAMES, DEGENERATE, MIXED, FLUENT):
        for name, (p, c) in group.items():
            r = read(p, c)
            print(
                f"  {name:28s} reader {r.score:+.3f} (Q {r.q:.3f}, S {r.sentiment:+.3f})"
                f"  careful {careful_score([p], [c])[0]:+.3f}"
            )
    print(
        f"the world's SFT continuations (n={len(prompts)}): reader mean "
        f"{statistics.fmean(reader_score(prompts, completions)):.3f}, careful mean "
        f"{statistics.fmean(careful_score(prompts, completions)):.3f}"
    )
    for name, texts in (("the world's reviews", splits), ("their words shuffled", _shuffled(splits))):
        speed = _texts_per_second(texts)
        print(f"texts/s on {name}: reader {speed['reader']:.0f}, careful {speed['careful']:.0f}")
