"""Sweeps through Hydra's launchers and sweepers: joblib (upstream reused, a failed job that stops
no other, W&B offline runs), submitit and Optuna."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.helpers import DEBUG, read_run, run


@pytest.mark.slow
def test_a_joblib_sweep_reuses_upstream_and_a_failed_job_does_not_stop_the_others(joblib_sweep):
    code, output, sweep_dir = joblib_sweep
    assert code != 0  # the sweep reports its failed job ...
    assert "algo.kl.beta: must be >= 0, got -1.0" in output
    results = {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/result.json")}
    statuses = [results[job]["status"] for job in ("0", "1", "2")]
    assert statuses == ["completed", "completed", "failed"]  # ... after every job ran
    assert "algo.kl.beta" in results["2"]["error"]
    logs = "".join(p.read_text() for p in sweep_dir.glob("*/cli.log"))
    assert "pretrain: building" not in logs and logs.count("reward: reusing artifact") == 2
    assert results["0"]["metrics"]["rl/eval/kl"] != results["1"]["metrics"]["rl/eval/kl"]


@pytest.mark.slow
def test_wandb_offline_runs_hold_the_config_group_tags_and_metrics(joblib_sweep):
    _, _, sweep_dir = joblib_sweep
    [log_file] = (sweep_dir / "0" / "rl" / "wandb").glob("offline-run-*/run-*.wandb")
    wb = read_run(log_file)
    assert wb["group"] == f"rl/{sweep_dir.name}" and wb["job_type"] == "rl"
    assert {"rl", "algo=rloo", "algo.kl.beta=0.05"} <= set(wb["tags"])
    assert wb["config"]["algo"]["kl"]["beta"] == 0.05 and wb["config"]["algo"]["name"] == "rloo"
    assert len(wb["history"]["rl/train/reward"]) == 2 and "rl/eval/gold" in wb["history"]


@pytest.mark.slow
def test_a_sweep_through_the_submitit_local_launcher(lab_home, tmp_path):
    code, output = run(
        "-m",
        "stage=sft",
        DEBUG,
        "sft.lr=1e-3",
        "logger=csv",
        "hydra/launcher=submitit_local_jobs",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        home=lab_home,
        cwd=tmp_path,
    )
    assert code == 0, output[-3000:]
    [result] = (tmp_path / "sweep").glob("*/result.json")
    assert json.loads(result.read_text())["metrics"]["sft/val/loss"] > 0
    assert list((tmp_path / "sweep" / ".submitit").glob("*/*_log.out"))  # submitit ran the job


@pytest.mark.slow
def test_optuna_sweeper_minimizes_the_returned_metric(lab_home, tmp_path):
    code, output = run(
        "hparams_search=sft_optuna",
        "hydra.sweeper.n_trials=2",
        DEBUG,
        "sft.max_steps=5",
        "sft.warmup_steps=2",  # a search-space key set on the command line is fixed, not searched
        "logger=csv",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        home=lab_home,
        cwd=tmp_path,
    )
    assert code == 0, output[-3000:]
    best = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    results = (tmp_path / "sweep").glob("*/result.json")
    losses = [json.loads(p.read_text())["metrics"]["sft/val/loss"] for p in results]
    assert len(losses) == 2 and best["best_value"] == pytest.approx(min(losses))
    assert set(best["best_params"]) == {"sft.lr"}  # warmup_steps is fixed on the command line
