"""rlhf_lab.report.rl: the table of the policy-gradient ablations from a multirun folder's runs: seed
intervals per configuration, differences from a baseline paired by seed, the plot; failed runs left out."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from rlhf_lab.report.rl import report


def fake_run(folder, overrides: list[str], metrics: dict | None):
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"seed": 0, "algo": {"name": "x"}}))
    if metrics is not None:
        status = {"status": "completed", "metrics": metrics}
        (folder / "result.json").write_text(json.dumps(status))


def metrics(gold: float, kl: float, seconds: float, peak: float) -> dict:
    return {
        "rl/eval/gold": gold,
        "rl/eval/gold_gain": gold + 0.1,
        "rl/eval/kl": kl,
        "rl/eval/win_rate": 0.7,
        "rl/eval/length": 20.0,
        "rl/train/time/total": seconds,
        "rl/train/memory/peak_mb": peak,
        "rl/train/memory/at_start_mb": peak - 100 - 10 * gold,
        "rl/train/memory/weights_mb": 30.8,
    }


@pytest.fixture
def sweep(tmp_path):
    golds = {"rloo": [0.5, 0.6, 0.7], "ppo": [0.4, 0.45, 0.65]}
    job = 0
    for algo, values in golds.items():
        for seed, gold in enumerate(values):
            fake_run(
                tmp_path / str(job), [f"algo={algo}", f"rl.seed={seed}"], metrics(gold, 10 + seed, 60, 800)
            )
            job += 1
    fake_run(tmp_path / str(job), ["algo=dapo", "rl.seed=0"], None)  # killed: no result
    return tmp_path


def test_the_table_and_the_paired_differences(sweep, tmp_path):
    markdown = report(sweep, tmp_path / "out", baseline="algo=rloo")
    rows = {
        line.split(" | ")[0].lstrip("| "): line for line in markdown.splitlines() if line.startswith("| algo")
    }
    assert set(rows) == {"algo=rloo", "algo=ppo"}, "the run without a result is left out"
    # rloo's gold 0.5, 0.6, 0.7: mean 0.6, half-width t(0.975, 2)·0.1/√3 = 4.303·0.0577 = 0.248
    expected = "| algo=rloo | 3 | 0.600 ± 0.248 | 0.700 ± 0.248 | 11.0 ± 2.5 | 0.70 ± 0.00 | 20.0 ± 0.0 |"
    assert expected in rows["algo=rloo"]
    # ppo − rloo by seed: −0.1, −0.15, −0.05: mean −0.1, every seed below
    diff_row = [line for line in markdown.splitlines() if line.startswith("| algo=ppo |")][-1]
    assert "Δ gold" in markdown and "-0.100 ± 0.124 (0/3)" in diff_row  # gold: every seed below
    assert "0.0 ± 0.0 (0/0)" in diff_row  # the same KL in every seed
    # added = peak − at start = 100 + 10·gold: ppo − rloo by seed 10·(−0.1, −0.15, −0.05)
    assert diff_row.endswith("| -1 ± 1 (0/3) |")
    assert "| 800 ± 0 | 106 ± 2 | 30.8 ± 0.0 |" in rows["algo=rloo"]  # peak, added (100 + 10·0.6), weights
    with open(tmp_path / "out" / "runs.csv") as f:
        runs = list(csv.DictReader(f))
    assert len(runs) == 6 and {r["rl.seed"] for r in runs} == {"0", "1", "2"}
    assert (tmp_path / "out" / "gold_vs_kl.png").stat().st_size > 5_000
    assert (tmp_path / "out" / "summary.md").read_text() == markdown


def test_an_unknown_baseline_names_the_configurations(sweep, tmp_path):
    with pytest.raises(SystemExit, match="'algo=grpo' is not one of: algo=rloo, algo=ppo"):
        report(sweep, tmp_path / "out", baseline="algo=grpo")
