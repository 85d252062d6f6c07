"""Simulated labels with a length preference (`labeler.length_bonus`; Singhal et al. 2023, "A long way to
go"): utility = gold + length_bonus · words in place of the gold, for bt, argmax, flip and pool; 0 is
today's labels exactly; the collect key changes with it; bad values name the key; and a reward model
trained on biased labels scores length more than one trained on unbiased labels."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
from hydra.errors import ConfigCompositionException

from rlhf_lab.config import AnnotatorConfig, ConfigError
from rlhf_lab.labelers import (
    ArgmaxLabeler,
    BradleyTerryLabeler,
    Comparison,
    FlipLabeler,
    PoolLabeler,
    make_labeler,
    uniform,
)
from rlhf_lab.scorers import LengthScorer, word_count
from tests.helpers import SMALL

N = 10_000
T = 0.3
POOL = [
    AnnotatorConfig("careful", temperature_scale=0.5),
    AnnotatorConfig("careless", flip=0.25),
    AnnotatorConfig("verbose", length_bonus=0.1),
]


def text(words: int, tag: str) -> str:
    return " ".join(["w"] * (words - 1) + [tag])


@pytest.fixture(scope="module")
def comps() -> list[Comparison]:
    """Pairs of random lengths (2-30 words) and gold in [-1, 1], gold independent of length."""
    rng = random.Random(0)
    return [
        Comparison(
            f"p{i % 300}",
            text(rng.randint(2, 30), f"{i}a"),
            text(rng.randint(2, 30), f"{i}b"),
            rng.uniform(-1, 1),
            rng.uniform(-1, 1),
        )
        for i in range(N)
    ]


@pytest.fixture(scope="module")
def tied() -> list[Comparison]:
    """Pairs of equal gold whose completions differ by 1-10 words, the longer one drawn as a or as b."""
    rng = random.Random(1)
    out = []
    for i in range(N):
        short = rng.randint(2, 20)
        longer = short + rng.randint(1, 10)
        g = rng.uniform(-1, 1)
        a, b = (longer, short) if rng.random() < 0.5 else (short, longer)
        out.append(Comparison(f"p{i % 300}", text(a, f"{i}a"), text(b, f"{i}b"), g, g))
    return out


def longer_won(labels, pairs) -> list[bool]:
    return [lab == int(word_count(c.a) > word_count(c.b)) for lab, c in zip(labels, pairs, strict=True)]


# ------------------------------------------------------------------------- 0 is today's labels
def todays_bt(c: Comparison, seed: int) -> int:
    """The Bradley-Terry rule as it was before the bonus: σ((g_a - g_b)/T) on the pair's sorted draw."""
    a_first = c.a <= c.b
    first, second = (c.a, c.b) if a_first else (c.b, c.a)
    u = uniform(seed, "bt", c.prompt, first, second)
    gap = (c.gold_a - c.gold_b) if a_first else (c.gold_b - c.gold_a)
    return int((u < 1 / (1 + math.exp(-gap / T))) == a_first)


def todays_flip(c: Comparison, seed: int, epsilon: float) -> int | None:
    if c.gold_a == c.gold_b:
        return None
    best = int(c.gold_a > c.gold_b)
    first, second = sorted((c.a, c.b))
    return 1 - best if uniform(seed, "flip", c.prompt, first, second) < epsilon else best


def test_zero_bonus_labels_are_todays_exactly(comps):
    pairs = comps[:3000]
    for bonus in (0.0, -0.0, 0):
        assert BradleyTerryLabeler(T, seed=4, length_bonus=bonus).label(pairs) == [
            todays_bt(c, 4) for c in pairs
        ]
        assert ArgmaxLabeler(bonus).label(pairs) == [int(c.gold_a > c.gold_b) for c in pairs]
        assert FlipLabeler(0.2, seed=4, length_bonus=bonus).label(pairs) == [
            todays_flip(c, 4, 0.2) for c in pairs
        ]
        pool = PoolLabeler(POOL, T, seed=4, length_bonus=bonus)
        assert pool.label(pairs) == PoolLabeler(POOL, T, seed=4).label(pairs)
        assert [pool.probability(c) for c in pairs[:200]] == [
            PoolLabeler(POOL, T, seed=4).probability(c) for c in pairs[:200]
        ]
    for kind, kwargs in [("bt", {"temperature": T}), ("argmax", {}), ("flip", {"epsilon": 0.2})]:
        default = make_labeler(kind, seed=4, **kwargs).label(pairs)
        assert make_labeler(kind, seed=4, length_bonus=0.0, **kwargs).label(pairs) == default


def test_the_length_scorer_counts_the_same_words():
    completions = ["  one two\tthree\n", "", "a-b c", " x "]
    assert [word_count(c) for c in completions] == [3, 0, 2, 1]
    assert LengthScorer().score([""] * 4, completions).tolist() == [3.0, 0.0, 2.0, 1.0]


# ------------------------------------------------------------------------- a length preference
def test_argmax_and_flip_prefer_the_longer_of_two_equally_gold_completions(tied):
    assert ArgmaxLabeler().label(tied[:100]) == [None] * 100  # a gold tie: no label
    assert all(longer_won(ArgmaxLabeler(0.01).label(tied), tied))
    assert not any(longer_won(ArgmaxLabeler(-0.01).label(tied), tied))  # < 0: the shorter
    assert all(longer_won(FlipLabeler(0.0, seed=0, length_bonus=0.01).label(tied), tied))
    flipped = longer_won(FlipLabeler(0.2, seed=0, length_bonus=0.01).label(tied), tied)
    assert abs(sum(flipped) / N - 0.8) < 4 * math.sqrt(0.16 / N)


def test_bt_prefers_the_longer_completion_as_often_as_its_bonus_says(tied):
    se = math.sqrt(0.25 / N)
    plain = sum(longer_won(BradleyTerryLabeler(T, seed=0).label(tied), tied)) / N
    assert abs(plain - 0.5) < 4 * se  # blind to length
    rates = [plain]
    for bonus in (0.02, 0.1):
        rate = sum(longer_won(BradleyTerryLabeler(T, seed=0, length_bonus=bonus).label(tied), tied)) / N
        words = torch.tensor([abs(word_count(c.a) - word_count(c.b)) for c in tied], dtype=torch.float64)
        expected = torch.sigmoid(bonus * words / T).mean().item()
        assert abs(rate - expected) < 4 * se, bonus
        rates.append(rate)
    assert rates[0] + 0.05 < rates[1] < rates[2] - 0.1  # more often, the larger the bonus
    assert sum(longer_won(BradleyTerryLabeler(T, seed=0, length_bonus=-0.1).label(tied), tied)) / N < 0.3


def test_a_large_bonus_overrides_a_gold_gap():
    short, long_ = text(5, "good"), text(15, "worse")  # 10 words longer, 0.5 lower gold
    c = Comparison("p", short, long_, 0.5, 0.0)
    assert ArgmaxLabeler(0.04).label([c]) == [1]  # 0.4 < 0.5: gold still wins
    assert ArgmaxLabeler(0.06).label([c]) == [0]  # 0.6 > 0.5: length wins
    assert FlipLabeler(0.0, seed=0, length_bonus=0.06).label([c]) == [0]
    pairs = [Comparison(f"p{i}", short, long_, 0.5, 0.0) for i in range(2000)]
    assert sum(BradleyTerryLabeler(T, seed=0).label(pairs)) / 2000 > 0.75  # gold: the short one
    assert sum(BradleyTerryLabeler(T, seed=0, length_bonus=0.5).label(pairs)) / 2000 < 0.01


def test_pool_adds_the_bonus_in_gold_units_before_each_annotators_temperature():
    c = Comparison("p", "one two three", "one", 0.3, 0.1)  # 2 words longer
    one = AnnotatorConfig("x", temperature_scale=2.0, length_bonus=0.5, flip=0.1)
    p = torch.sigmoid(torch.tensor((0.2 + 0.05 * 2) / (2.0 * 0.5) + 0.5 * 2)).item()
    assert PoolLabeler([one], 0.5, 0, length_bonus=0.05).probability(c) == pytest.approx(
        0.9 * p + 0.1 * (1 - p)
    )


# ---------------------------------------------------------------------------- config and keys
@pytest.mark.parametrize("value", [float("nan"), float("inf"), "0.1", None, True])
def test_a_bad_bonus_is_refused_naming_the_key(value):
    for kind, kwargs in [
        ("bt", {"temperature": T}),
        ("argmax", {}),
        ("flip", {}),
        ("pool", {"annotators": POOL}),
    ]:
        with pytest.raises(ConfigError, match=r"labeler\.length_bonus"):
            make_labeler(kind, length_bonus=value, **kwargs)


def test_the_config_checks_the_bonus_naming_the_key(make_cfg):
    assert make_cfg().labeler.length_bonus == 0.0
    assert make_cfg("labeler=argmax", "labeler.length_bonus=0.03").labeler.length_bonus == 0.03
    for value in ("inf", "nan"):
        with pytest.raises(ConfigError, match=r"labeler\.length_bonus: must be finite"):
            make_cfg(f"labeler.length_bonus={value}")
    with pytest.raises(ConfigCompositionException, match=r"labeler\.length_bonus"):
        make_cfg("labeler.length_bonus=long")
    with pytest.raises(ConfigError, match=r"labeler\.length_bonus: labeler=file reads human labels"):
        make_cfg("labeler=file", "labeler.path=labels.jsonl", "labeler.length_bonus=0.1")
    with pytest.raises(ConfigError, match=r"labeler\.length_bonus=0\.1: labeler=file"):
        make_labeler("file", path="labels.jsonl", length_bonus=0.1)


def test_the_bonus_enters_the_collect_key_only_when_set(make_cfg):
    from rlhf_lab.pipeline import stage_key
    from rlhf_lab.stages.common import comparisons_key

    base = make_cfg(*SMALL)
    assert "length_bonus" not in comparisons_key(base)["labeler"]  # unbiased labels keep their keys
    assert stage_key(make_cfg(*SMALL, "labeler.length_bonus=0"), "collect") == stage_key(base, "collect")
    biased = make_cfg(*SMALL, "labeler.length_bonus=0.03")
    assert comparisons_key(biased)["labeler"]["length_bonus"] == 0.03
    for stage in ("collect", "reward", "rl"):
        assert stage_key(biased, stage) != stage_key(base, stage), stage
    other = make_cfg(*SMALL, "labeler.length_bonus=0.05")
    assert stage_key(other, "collect") != stage_key(biased, "collect")
    assert stage_key(biased, "sft") == stage_key(base, "sft")  # upstream of the labels: shared


def test_the_experiment_composes_with_its_bonus(make_cfg):
    cfg = make_cfg("experiment=length_bias")
    assert cfg.labeler.length_bonus > 0 and cfg.algo.name == "rloo" and cfg.algo.kl.beta > 0
    assert cfg.pipeline == ["pretrain", "sft", "collect", "reward", "rl"]


# ---------------------------------------------------------------------------- collect -> reward
def longer_share(rows: list[dict]) -> float:
    """The share of the pairs of unequal length whose chosen completion is the longer."""
    diffs = [word_count(r["chosen"]) - word_count(r["rejected"]) for r in rows]
    unequal = [d for d in diffs if d]
    return sum(d > 0 for d in unequal) / len(unequal)


@pytest.mark.slow
def test_biased_labels_prefer_length_and_their_reward_model_scores_it(make_cfg, tmp_path):
    """The debug world's samples (collect of SMALL), labeled with and without a strong length bonus: the
    biased pairs choose the longer completion far more often, collect reports it, and the reward model
    trained on them scores the samples' length far more than the reward model of the unbiased labels
    (correlation about 0.5 against about 0 at reward_model.seed 0, 1 and 2)."""
    from rlhf_lab.artifacts import read_manifest
    from rlhf_lab.pipeline import ensure
    from rlhf_lab.scorers import RewardModelScorer

    def build(bonus: float):
        cfg = make_cfg(*SMALL, "reward_model.max_steps=40", f"labeler.length_bonus={bonus}")
        rm = ensure(cfg, "reward", tmp_path)
        return cfg, rm, read_manifest(rm)["inputs"]["collect"]

    (cfg, plain_rm, plain_dir), (_, biased_rm, biased_dir) = build(0.0), build(0.3)
    read = lambda d: [json.loads(line) for line in open(f"{d}/preferences.jsonl")]  # noqa: E731
    plain_share, biased_share = longer_share(read(plain_dir)), longer_share(read(biased_dir))
    assert biased_share > max(0.8, plain_share + 0.2), (plain_share, biased_share)
    metrics = read_manifest(biased_dir)["metrics"]
    assert metrics["collect/longer_chosen"] == pytest.approx(biased_share)
    assert "collect/longer_chosen" not in read_manifest(plain_dir)["metrics"]  # unbiased: as before
    samples = lambda d: open(f"{d}/samples.jsonl").read()  # noqa: E731
    assert samples(plain_dir) == samples(biased_dir)  # the same samples: only the labels differ

    sampled = [json.loads(line) for line in open(f"{plain_dir}/samples.jsonl")]
    prompts = [s["prompt"] for s in sampled for _ in s["completions"]]
    completions = [c for s in sampled for c in s["completions"]]
    words = torch.tensor([float(word_count(c)) for c in completions])

    def corr(rm) -> float:
        scores = RewardModelScorer(rm, cfg.model, max_length=cfg.data.max_length).score(prompts, completions)
        return torch.corrcoef(torch.stack([scores, words]))[0, 1].item()

    plain, biased = corr(plain_rm), corr(biased_rm)
    assert biased > 0.3 and biased > plain + 0.25, (plain, biased)
