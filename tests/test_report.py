"""rlhf-lab-report: the tables and plots of a sweep with a failed job, and the command's errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from rlhf_lab.report import report


@pytest.mark.slow
def test_the_report_of_a_sweep_with_a_failed_job(joblib_sweep):
    _, _, sweep_dir = joblib_sweep
    markdown, plots = report(sweep_dir)
    assert "| algo.kl.beta=0.05 | 1 |" in markdown and "| algo.kl.beta=0.2 | 1 |" in markdown
    assert "Failed or missing runs" in markdown and "(algo.kl.beta=-1): failed: ConfigError" in markdown
    with open(sweep_dir / "report" / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["completed", "completed", "failed"]
    assert float(rows[0]["rl/eval/gold"]) == pytest.approx(
        json.loads((sweep_dir / "0" / "result.json").read_text())["metrics"]["rl/eval/gold"]
    )
    names = sorted(p.name for p in plots)
    assert names == [
        "bon_vs_rl.png",
        "fits.png",
        "gold_vs_kl.png",
        "learning_curves.png",
        "overoptimization.png",
    ]
    with open(sweep_dir / "report" / "fits.csv") as f:
        fitted = {(r["configuration"], r["method"], r["reward"]) for r in csv.DictReader(f)}
    assert ("algo.kl.beta=0.05", "rl", "gold") in fitted and ("algo.kl.beta=0.2", "rl", "proxy") in fitted
    assert all(p.stat().st_size > 10_000 for p in plots)


def test_the_report_command_names_a_missing_directory(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "rlhf_lab.report", str(tmp_path / "nowhere")], capture_output=True, text=True
    )
    assert result.returncode == 2 and "nowhere: no such run or multirun directory" in result.stderr
