"""rlhf_lab.report.fitting (Gao et al. 2022's forms, bootstrap over seeds, mean ± t-interval) and the report's
fits of a small multirun folder written by hand."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import yaml

from rlhf_lab.artifacts import LOG_FILE
from rlhf_lab.report import fitting, report

TRUE = {
    "rl": [(0.8, 0.3), (0.5, 0.05), (1.2, 0.6), (0.3, -0.1)],
    "bon": [(0.6, 0.2), (0.4, 0.02), (0.9, -0.05)],
}


def synthetic(form, alpha, beta, rng, points=40, noise=0.0, top=6.0):
    d = np.concatenate([[0.0], np.sort(rng.uniform(0.05, top, points - 1))])
    return d, fitting.predict(form, alpha, beta, d) + noise * rng.standard_normal(points)


@pytest.mark.parametrize("form", fitting.FORMS)
def test_the_fit_recovers_alpha_and_beta_without_noise(form):
    rng = np.random.default_rng(0)
    for alpha, beta in TRUE[form]:
        result = fitting.fit(form, *synthetic(form, alpha, beta, rng))
        assert (result.alpha, result.beta) == pytest.approx((alpha, beta), abs=1e-9)
        assert result.r2 == pytest.approx(1.0) and result.points == 40


@pytest.mark.parametrize("form", fitting.FORMS)
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_the_fit_recovers_alpha_and_beta_with_noise(form, seed):
    rng = np.random.default_rng(seed)
    for alpha, beta in TRUE[form]:
        result = fitting.fit(form, *synthetic(form, alpha, beta, rng, points=400, noise=0.02))
        assert result.alpha == pytest.approx(alpha, abs=0.02) and result.beta == pytest.approx(beta, abs=0.01)
        assert 0.9 < result.r2 <= 1


def test_the_regressors_vanish_at_zero_and_reject_a_negative_d():
    for form in fitting.FORMS:
        assert fitting.design(form, [0.0]).tolist() == [[0.0, 0.0]]
        with pytest.raises(ValueError, match="≥ 0"):
            fitting.design(form, [-1.0])
    with pytest.raises(ValueError, match="nothing to fit"):
        fitting.fit("rl", [0.0, 0.0], [0.0, 0.0])
    with pytest.raises(ValueError, match="form"):
        fitting.fit("ppo", [1.0], [1.0])


@pytest.mark.parametrize("form", fitting.FORMS)
def test_the_peak_is_the_numeric_argmax(form):
    grid = np.linspace(1e-6, 60, 600_001)
    for alpha, beta in [(0.8, 0.3), (0.5, 0.2), (1.2, 0.6), (2.0, 1.5)]:
        curve = fitting.predict(form, alpha, beta, grid)
        d_star, r_star = fitting.peak(form, alpha, beta)
        assert d_star == pytest.approx(grid[np.argmax(curve)], abs=2e-4)
        assert r_star == pytest.approx(curve.max(), rel=1e-7)
        assert float(fitting.predict(form, alpha, beta, [d_star])[0]) == pytest.approx(r_star)


def test_no_peak_where_the_curve_does_not_turn_down():
    assert np.isnan(fitting.peak("rl", 0.5, -0.1)).all() and np.isnan(fitting.peak("rl", 0.5, 0.0)).all()
    assert np.isnan(fitting.peak("bon", 0.5, -0.1)).all() and np.isnan(fitting.peak("bon", -0.5, 0.2)).all()
    result = fitting.fit("bon", *synthetic("bon", 0.4, -0.05, np.random.default_rng(0)))
    assert not result.has_peak and math.isnan(result.r_star)


def seed_curves(form, alpha, beta, rng, seeds, spread=0.05, noise=0.01):
    """Each seed its own (α, β) around the true ones, plus point noise: what resampling seeds sees."""
    curves = []
    for _ in range(seeds):
        a, b = alpha + spread * rng.standard_normal(), beta + spread / 4 * rng.standard_normal()
        curves.append(synthetic(form, a, b, rng, points=12, noise=noise, top=4.0))
    return curves


@pytest.mark.parametrize("form", fitting.FORMS)
def test_the_bootstrap_interval_covers_the_true_values(form):
    alpha, beta = 0.8, 0.3
    d_star, r_star = (float(v) for v in fitting.peak(form, alpha, beta))
    covered = {name: 0 for name in fitting.PARAMETERS}
    for dataset in range(40):
        result = fitting.fit_seeds(form, seed_curves(form, alpha, beta, np.random.default_rng(dataset), 10))
        assert result.seeds == 10 and result.fit.points == 120 and result.peak_share == 1.0
        for name, true in zip(fitting.PARAMETERS, (alpha, beta, d_star, r_star), strict=True):
            low, high = result.intervals[name]
            assert low <= result.estimate(name) <= high
            covered[name] += low <= true <= high
    assert all(count >= 32 for count in covered.values()), covered  # nominal 95%: 38 of 40


def test_the_bootstrap_says_when_the_peak_is_not_established():
    curves = seed_curves("rl", 0.5, 0.0, np.random.default_rng(0), 6, spread=0.02)  # β = 0: no peak
    result = fitting.fit_seeds("rl", curves)
    assert 0 < result.peak_share < 1 and result.intervals["d_star"][1] == math.inf
    one = fitting.fit_seeds("rl", curves[:1])
    assert one.seeds == 1 and all(math.isnan(v) for pair in one.intervals.values() for v in pair)
    again = fitting.fit_seeds("rl", curves)
    assert again.intervals == result.intervals, "the bootstrap draws from a fixed seed"


def test_the_mean_interval():  # its t quantile is report.stats' (tests/test_stats.py)
    mean, half = fitting.mean_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.303 * 1.0 / math.sqrt(3), rel=1e-3)
    assert fitting.mean_interval([4.0])[0] == 4.0 and math.isnan(fitting.mean_interval([4.0])[1])
    assert fitting.format_interval([1.0, 2.0, 3.0]) == "2.000 ± 2.484"
    assert fitting.format_interval([0.5]) == "0.500" and fitting.format_interval([]) == "–"


def test_the_seed_band_and_the_gains():
    keys, mean, low, high = fitting.seed_band([{0: 1.0, 1: 2.0, 2: 9.0}, {0: 3.0, 1: 4.0}])
    assert keys == [0, 1] and mean == [2.0, 3.0]
    assert high[0] - mean[0] == pytest.approx(12.706, abs=1e-3) and low[0] == pytest.approx(
        2 - 12.706, abs=1e-3
    )
    assert fitting.seed_band([{0: 1.0}]) == ([0], [1.0], [1.0], [1.0]) and fitting.seed_band([]) is None
    d, gain = fitting.gains([0.0, 1.0, 2.0], [0.3, 0.5, 0.4])
    assert gain.tolist() == pytest.approx([0.0, 0.2, 0.1])
    with pytest.raises(ValueError, match="not at d = 0"):
        fitting.gains([0.5, 1.0], [0.3, 0.5])


# -------------------------------------------------------------------- the report of a synthetic sweep
RL_TRUE = {
    "0.05": {"gold": (0.8, 0.3), "reward": (0.9, -0.1)},
    "0.2": {"gold": (0.5, 0.2), "reward": (0.6, 0.05)},
}
BON_TRUE = {"gold": (0.6, 0.2), "proxy": (0.7, 0.05)}
START = {"gold": 0.1, "reward": -0.2, "proxy": -0.2}  # the starting policy's rewards


def write_run(root, job, overrides, beta, artifacts, metrics):
    run = root / str(job)
    (run / ".hydra").mkdir(parents=True)
    config = {"seed": 0, "algo": {"name": "rloo", "kl": {"beta": float(beta)}}}
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    record = {"status": "completed", "artifacts": artifacts, "metrics": metrics}
    (run / "result.json").write_text(json.dumps(record))


@pytest.fixture
def sweep(tmp_path):
    """Two β values × three RL seeds, each seed with its own best-of-n artifact (shared by both β),
    its curves exactly Gao's forms on top of the start's rewards."""
    root, lab, job = tmp_path / "multirun", tmp_path / "artifacts", 0
    for seed in range(3):
        bon = lab / "bon" / f"s{seed}"
        bon.mkdir(parents=True)
        table = []
        for n in (1, 2, 4, 8, 16, 64, 256):
            kl = math.log(n) - (n - 1) / n
            row = {"n": n, "kl": kl}
            for key, (a, b) in BON_TRUE.items():
                row[key] = START[key] + float(fitting.predict("bon", a, b, [math.sqrt(kl)])[0])
            table.append(row)
        (bon / "bon.json").write_text(json.dumps(table))
        for beta, true in RL_TRUE.items():
            rl = lab / "rl" / f"{beta}-s{seed}"
            rl.mkdir(parents=True)
            rows = []
            for step in range(0, 101, 10):
                kl = 0.0 if step == 0 else (step / 10) * (1 + 0.1 * seed) * (2 if beta == "0.05" else 1)
                row = {"step": step, "kl": kl, "length": 20.0}
                for key, (a, b) in true.items():
                    row[key] = START[key] + float(fitting.predict("rl", a, b, [math.sqrt(kl)])[0])
                rows.append(row)
            (rl / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            log = ["step,rl/train/gold,rl/train/reward,rl/train/kl"]
            log += [f"{r['step']},{r['gold']},{r['reward']},{r['kl']}" for r in rows]
            (rl / LOG_FILE).write_text("\n".join(log) + "\n")
            final = {f"rl/eval/{k}": v for k, v in rows[-1].items() if k != "step"}
            overrides = [f"algo.kl.beta={beta}", f"rl.seed={seed}", f"bon.seed={seed}"]
            write_run(root, job, overrides, beta, {"rl": str(rl), "bon": str(bon)}, final)
            job += 1
    return root


def test_the_report_of_a_synthetic_sweep_writes_the_fits(sweep):
    markdown, plots = report(sweep)
    out = sweep / "report"
    with open(out / "fits.csv") as f:
        rows = {(r["configuration"], r["method"], r["reward"]): r for r in csv.DictReader(f)}
    for beta, true in RL_TRUE.items():
        for reward, name in (("gold", "gold"), ("proxy", "reward")):
            row = rows[(f"algo.kl.beta={beta}", "rl", reward)]
            assert (float(row["alpha"]), float(row["beta"])) == pytest.approx(true[name], abs=1e-6)
            assert float(row["r2"]) == pytest.approx(1.0) and row["seeds"] == "3" and row["points"] == "33"
            assert float(row["alpha_low"]) == pytest.approx(true[name][0], abs=1e-6)
    shared = rows[("algo.kl.beta=0.05, algo.kl.beta=0.2", "best-of-n", "gold")]
    assert (float(shared["alpha"]), float(shared["beta"])) == pytest.approx(BON_TRUE["gold"], abs=1e-6)
    d_star, r_star = fitting.peak("rl", *RL_TRUE["0.05"]["gold"])
    gold = rows[("algo.kl.beta=0.05", "rl", "gold")]
    assert float(gold["d_star"]) == pytest.approx(d_star) and float(gold["r_star"]) == pytest.approx(r_star)
    assert rows[("algo.kl.beta=0.05", "rl", "proxy")]["d_star"] == "nan"  # proxy keeps rising
    assert float(gold["d_max"]) == pytest.approx(math.sqrt(24)) and float(gold["d_star"]) > math.sqrt(24)
    assert f"| {d_star:.3g}† [" in markdown, "a peak beyond the data is marked as an extrapolation"
    assert len(rows) == 6
    assert "Mean ± 95% t-interval over seeds" in markdown and "| algo.kl.beta=0.05 | 3 |" in markdown
    assert (
        "| algo.kl.beta=0.05 | rl | proxy | 3 | 0.9 [0.9, 0.9] | -0.1 [-0.1, -0.1] | 1.000 | no peak"
        in markdown
    )
    assert (out / "fits.md").read_text() in markdown
    names = sorted(p.name for p in plots)
    assert names == [
        "bon_vs_rl.png",
        "fits.png",
        "gold_vs_kl.png",
        "learning_curves.png",
        "overoptimization.png",
    ]
    assert (out / "fits.png").stat().st_size > 10_000


def test_a_curve_without_its_start_is_left_out_and_named(sweep):
    rl = sweep.parent / "artifacts" / "rl" / "0.2-s2"
    lines = (rl / "eval.jsonl").read_text().splitlines()
    (rl / "eval.jsonl").write_text("\n".join(lines[1:]) + "\n")  # no evaluation at step 0
    markdown, _ = report(sweep)
    assert f"`{rl}` starts at step = 10, not 0: left out" in markdown
    with open(sweep / "report" / "fits.csv") as f:
        seeds = {(r["configuration"], r["method"], r["reward"]): r["seeds"] for r in csv.DictReader(f)}
    assert (
        seeds[("algo.kl.beta=0.2", "rl", "gold")] == "2" and seeds[("algo.kl.beta=0.05", "rl", "gold")] == "3"
    )
