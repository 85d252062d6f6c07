"""objective=noisy_gold: the gold plus a fixed error over the completion's words, Gaussian or Student-t
at equal variance (Kwa et al. 2024, "Catastrophic Goodhart"): the weights' laws, the scorer, its settings
and cache keys, and a short RL run against it."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import defaultdict

import numpy as np
import pytest
import torch

from rlhf_lab.artifacts import read_manifest
from rlhf_lab.config import ConfigError
from rlhf_lab.pipeline import ensure, stage_key
from rlhf_lab.scorers import (
    GoldScorer,
    NoisyGoldScorer,
    objective_key,
    objective_scorer,
    word_weight,
    words,
)
from tests.helpers import RL_FAST, policy_weights

N = 40_000  # words drawn to check a law
PROMPTS = ["The acting", "Hazel Ortega is", "The plot was not", "I"]
COMPLETIONS = [" was superb overall.", " dull as the sailor, dull.", " bad at all. Bad!", ""]


class Zero:
    """A gold that scores every text 0, so a scorer's score is its error alone."""

    def score(self, prompts, completions):
        return torch.zeros(len(completions))


def weights(error: str, df: float = 3.0, seed: int = 0, n: int = N) -> np.ndarray:
    return np.array([word_weight(f"w{i}", seed, error, df) for i in range(n)])


def kurtosis(x: np.ndarray) -> float:
    return float(((x - x.mean()) ** 4).mean() / x.var() ** 2)


def ks_distance(x: np.ndarray, cdf) -> float:
    """The Kolmogorov-Smirnov statistic of the sample x against the CDF `cdf`."""
    x = np.sort(x)
    f = np.array([cdf(v) for v in x])
    i = np.arange(1, len(x) + 1)
    return float(max((i / len(x) - f).max(), (f - (i - 1) / len(x)).max()))


def normal_cdf(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def t3_cdf(t: float) -> float:
    """Student's t with 3 degrees of freedom, in closed form."""
    s = t / math.sqrt(3)
    return 0.5 + (s / (1 + s * s) + math.atan(s)) / math.pi


# ---------------------------------------------------------------------------- the weights' laws
def test_the_weights_follow_their_laws():
    """Kolmogorov-Smirnov against the exact CDFs (the Student-t weights unscaled by sqrt((df-2)/df)):
    at N = 40,000 the 0.1% critical value is 1.95/sqrt(N) = 0.0098."""
    critical = 1.95 / math.sqrt(N)
    assert ks_distance(weights("gaussian"), normal_cdf) < critical
    assert ks_distance(weights("student_t") / math.sqrt(1 / 3), t3_cdf) < critical


def test_both_laws_have_variance_one_and_the_student_t_a_heavier_tail():
    """Sample variances over N words, with tolerances of about 5 standard errors: the Gaussian's variance
    has SE sqrt(2/N) = 0.007; the Student-t's at df = 6 (kurtosis 6, finite 4th moment) SE sqrt(5/N) =
    0.011, a 0.06 deviation has probability < 4% by Chebyshev alone. At df = 3 the sample variance has
    no finite variance, so the scale is checked on E|e| = 2/pi instead (Var|e| = 1 - 4/pi^2: SE 0.004)."""
    gaussian, t3, t6 = weights("gaussian"), weights("student_t"), weights("student_t", df=6.0)
    assert gaussian.var() == pytest.approx(1, abs=0.05)
    assert t6.var() == pytest.approx(1, abs=0.06)
    assert np.abs(gaussian).mean() == pytest.approx(math.sqrt(2 / math.pi), abs=0.02)
    assert np.abs(t3).mean() == pytest.approx(2 / math.pi, abs=0.02)  # sqrt(1/3)·E|T_3| = 2/pi
    # kurtosis: the Gaussian's 3 (SE sqrt(24/N) = 0.024); the Student-t's is 6 at df = 6, infinite at 3
    assert kurtosis(gaussian) == pytest.approx(3, abs=0.15)
    assert kurtosis(t6) > 4.5 and kurtosis(t3) > 10
    assert np.abs(t3).max() > 3 * np.abs(gaussian).max()  # the words a policy can find


def test_a_fixed_texts_error_has_the_same_variance_under_both_laws():
    """Over 10,000 draws (seeds), the error of one text has variance sigma²·Σc²/n under both laws:
    "good good film bad", Σc²/n = 6/4. Student-t at df = 10 (kurtosis 4): SE <= 1.5·sqrt(3/10,000) = 0.026;
    the Gaussian's SE 1.5·sqrt(2/10,000) = 0.021; tolerance 0.12."""
    text = "Good good, film bad."
    for error, df in (("gaussian", 3.0), ("student_t", 10.0)):
        errs = [NoisyGoldScorer(Zero(), error, 1.0, seed, df).errors([text]).item() for seed in range(10_000)]
        assert np.var(errs) == pytest.approx(1.5, abs=0.12), error


# ---------------------------------------------------------------------------- the scorer
def test_the_error_is_sigma_times_the_weights_over_the_root_of_the_word_count():
    scorer = NoisyGoldScorer(Zero(), "student_t", 0.7, seed=3)
    assert words(" Dull as the sailor, dull. !") == ["dull", "as", "the", "sailor", "dull"]
    e = {w: word_weight(w, 3, "student_t") for w in ("dull", "as", "the", "sailor")}
    expected = 0.7 * (2 * e["dull"] + e["as"] + e["the"] + e["sailor"]) / math.sqrt(5)
    assert scorer.errors([" Dull as the sailor, dull. !", "", " ... "]).tolist() == pytest.approx(
        [expected, 0.0, 0.0], rel=1e-12
    )


def test_the_error_is_deterministic_across_scorers_and_processes():
    """Two scorers, and a new process with another string-hash salt (PYTHONHASHSEED), draw the same
    weights: they come from SHA-256 of (seed, word), not from Python's salted `hash`."""
    a = NoisyGoldScorer(GoldScorer("reader"), "student_t", 0.5, seed=1)
    b = NoisyGoldScorer(GoldScorer("reader"), "student_t", 0.5, seed=1)
    assert torch.equal(a.score(PROMPTS, COMPLETIONS), b.score(PROMPTS, COMPLETIONS))
    code = (
        "from rlhf_lab.scorers import word_weight; "
        "print(repr([word_weight(w, 1, 'student_t') for w in 'a b c'.split()]))"
    )
    env = os.environ | {"PYTHONHASHSEED": "12345"}
    other = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert other.stdout.strip() == repr([word_weight(w, 1, "student_t") for w in "a b c".split()])


def test_the_error_differs_between_seeds_and_laws_and_vanishes_at_sigma_zero():
    gold = GoldScorer("reader")
    exact = gold.score(PROMPTS, COMPLETIONS)

    def score(error, seed=0, sigma=0.5):
        return NoisyGoldScorer(gold, error, sigma, seed).score(PROMPTS, COMPLETIONS)

    assert torch.equal(score("gaussian", sigma=0.0), exact)
    assert torch.equal(score("student_t", sigma=0.0), exact)
    nonempty = slice(0, 3)
    for a, b in [(score("gaussian"), score("gaussian", seed=1)), (score("gaussian"), score("student_t"))]:
        assert (a[nonempty] != b[nonempty]).all()
    assert (score("gaussian")[nonempty] != exact[nonempty]).all()
    assert score("gaussian")[3] == exact[3]  # no words, no error
    # one point of the disk per word: at one seed the two laws agree in sign
    g, t = weights("gaussian", n=2000), weights("student_t", n=2000)
    assert (np.sign(g) == np.sign(t)).all()


# ---------------------------------------------------------------------------- settings and keys
def test_the_objective_composes_and_scores_the_gold_plus_the_error(make_cfg):
    cfg = make_cfg("stage=rl", "objective=noisy_gold", "objective.error=student_t", "objective.seed=2")
    scorer = objective_scorer(cfg, {})
    assert isinstance(scorer, NoisyGoldScorer) and isinstance(scorer.gold, GoldScorer)
    assert (scorer.gold.kind, scorer.error, scorer.df, scorer.sigma, scorer.seed) == (
        cfg.gold,
        "student_t",
        3.0,
        0.5,
        2,
    )


def test_each_error_has_its_own_key_and_other_objectives_keep_theirs(make_cfg):
    base = ["stage=rl", "objective=noisy_gold"]
    keys = {
        stage_key(make_cfg(*base, *extra), "rl")
        for extra in (
            [],
            ["objective.error=student_t"],
            ["objective.error=student_t", "objective.df=5"],
            ["objective.seed=1"],
            ["objective.sigma=1"],
        )
    }
    assert len(keys) == 5
    gold = make_cfg("stage=rl", "objective=gold")
    assert not {"error", "df", "sigma", "seed"} & set(objective_key(gold))  # keys as before noisy_gold
    assert stage_key(make_cfg("stage=rl", "objective=gold", "objective.sigma=2"), "rl") == stage_key(
        gold, "rl"
    )


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["objective.error=cauchy"], "objective.error: 'cauchy' is not one of gaussian, student_t"),
        (["objective.df=2"], "objective.df: must be > 2, got 2.0"),
        (["objective.sigma=-0.1"], "objective.sigma: must be >= 0, got -0.1"),
        (["gold=null"], "objective.kind: objective=noisy_gold needs a gold scorer, but gold=null"),
    ],
)
def test_bad_settings_name_the_key(overrides, message, make_cfg):
    with pytest.raises(ConfigError, match=message):
        make_cfg("stage=rl", "objective=noisy_gold", *overrides)


def test_the_scorer_checks_its_settings_too():
    with pytest.raises(ConfigError, match="objective.error"):
        NoisyGoldScorer(Zero(), "cauchy", 0.5)
    with pytest.raises(ConfigError, match="objective.df: must be > 2"):
        NoisyGoldScorer(Zero(), "student_t", 0.5, df=1.5)
    with pytest.raises(ConfigError, match="objective.sigma"):
        NoisyGoldScorer(Zero(), "gaussian", -1.0)


# ---------------------------------------------------------------------------- RL against it
@pytest.mark.slow
def test_rl_against_a_heavy_tailed_noisy_gold(make_cfg, tmp_path):
    """The policy changes, and every held-out evaluation's proxy is the noisy gold of its own samples
    (rescored from eval_history.jsonl), its gold the gold of the same samples."""
    cfg = make_cfg(
        *RL_FAST, "algo=rloo", "objective=noisy_gold", "objective.error=student_t", "objective.sigma=1"
    )
    out = ensure(cfg, "rl", tmp_path)
    before, after = policy_weights(read_manifest(out)["inputs"]["sft"]), policy_weights(out)
    assert any(not torch.equal(before[k], after[k]) for k in before), "the policy did not change"

    samples = defaultdict(list)
    for line in open(out / "eval_history.jsonl"):
        row = json.loads(line)
        samples[row["step"]].append((row["prompt"], row["completion"]))
    evals = [json.loads(line) for line in open(out / "eval.jsonl")]
    assert [e["step"] for e in evals] == sorted(samples) == [0, 2]
    gold, noisy = GoldScorer(cfg.gold), objective_scorer(cfg, {})
    for e in evals:
        prompts, completions = map(list, zip(*samples[e["step"]], strict=True))
        assert e["reward"] == pytest.approx(noisy.score(prompts, completions).mean().item(), abs=1e-5)
        assert e["gold"] == pytest.approx(gold.score(prompts, completions).mean().item(), abs=1e-5)
        assert e["reward"] != pytest.approx(e["gold"], abs=1e-4)  # the error is there
    metrics = read_manifest(out)["metrics"]
    assert {"rl/train/reward", "rl/train/gold"} <= set(metrics)
