"""Pipelines and sweeps as researchers run them: the quickstart, the artifact cache under parallel
jobs, Hydra's joblib, submitit and Optuna plugins, W&B offline files, and the report."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rlhf_lab.artifacts import is_complete
from rlhf_lab.pipeline import artifact_dir, ensure
from rlhf_lab.report import report
from rlhf_lab.stages import bon
from tests.conftest import FAST
from tests.test_preferences import SMALL
from tests.wandb_log import read_run

RL_SMALL = [
    "rl.max_steps=2",
    "rl.rollouts_per_step=8",
    "rl.sampling.max_new_tokens=12",
    "rl.eval_prompts=8",
    "rl.eval_every=2",
]
EVAL_SMALL = ["eval.num_prompts=8", "eval.ppl_rows=16", "eval.sampling.max_new_tokens=12"]
SETTINGS = [*FAST, *SMALL, *RL_SMALL, *EVAL_SMALL]
STAGES = ["pretrain", "sft", "collect", "reward", "rl", "bon", "eval"]


def rlhf_lab(*args: str, home: Path, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RLHF_LAB_HOME": str(home), "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0", **env}
    return subprocess.Popen(
        [sys.executable, "-m", "rlhf_lab.cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process: subprocess.Popen) -> tuple[int, str]:
    output, _ = process.communicate(timeout=900)
    return process.returncode, output


def run(*args: str, home: Path, cwd: Path) -> tuple[int, str]:
    return finish(rlhf_lab(*args, home=home, cwd=cwd))


@pytest.fixture(scope="module")
def home() -> Path:
    """The session's lab: these runs share the fast pretrain/sft/collect/reward of the other tests."""
    return Path(os.environ["RLHF_LAB_HOME"])


@pytest.fixture(scope="module")
def quickstart(home, tmp_path_factory) -> tuple[int, str]:
    return run("experiment=quickstart", *SETTINGS, home=home, cwd=tmp_path_factory.mktemp("cwd"))


def test_quickstart_runs_every_stage_and_ends_with_a_summary(quickstart, home, tmp_path):
    code, output = quickstart
    assert code == 0, output[-3000:]
    run_dir = Path(re.search(r"summary \((.+)/summary\.md\)", output).group(1))
    summary = (run_dir / "summary.md").read_text()
    assert summary.startswith("| policy | gold reward | proxy reward | KL to SFT (nats) | win rate vs SFT")
    assert "| sft | " in summary and "| rl (ppo, β=0.05) | " in summary and "| best-of-8 | " in summary
    assert (run_dir / "summary.png").stat().st_size > 10_000
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "completed" and sorted(result["artifacts"]) == sorted(STAGES)
    assert result["metrics"]["eval/sft/kl"] == 0 and result["metrics"]["eval/rl/kl"] > 0
    assert result["metrics"]["eval/sft/win_rate"] == 0.5 and result["metrics"]["eval/rl/ppl"] > 1

    code, again = run("experiment=quickstart", *SETTINGS, home=home, cwd=tmp_path)
    assert code == 0, again[-3000:]
    assert "building artifact" not in again
    assert sorted(re.findall(r"(\w+): reusing artifact", again)) == sorted(STAGES)  # each stage once


def test_cache_false_rebuilds_the_named_stage_and_reuses_its_inputs(quickstart, home, tmp_path):
    code, output = run("stage=bon", "cache=false", *SETTINGS, home=home, cwd=tmp_path)
    assert code == 0, output[-3000:]
    assert "bon: building artifact" in output
    assert "sft: reusing artifact" in output and "reward: reusing artifact" in output


def test_an_interrupted_stage_leaves_no_artifact_and_is_built_next_time(make_cfg, tmp_path, monkeypatch):
    cfg = make_cfg("stage=bon", *SMALL, "bon.n=[1,2,3]")  # a key of its own

    def interrupted(ctx, out):
        (out / "bon.json").write_text("[]")  # half-written output
        raise KeyboardInterrupt

    real = bon.build
    monkeypatch.setattr(bon, "build", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ensure(cfg, "bon", tmp_path)
    assert not is_complete(artifact_dir(cfg, "bon")) and not artifact_dir(cfg, "bon").exists()
    monkeypatch.setattr(bon, "build", real)
    out = ensure(cfg, "bon", tmp_path)
    assert is_complete(out) and json.loads((out / "bon.json").read_text())[-1]["n"] == 3


def test_two_jobs_racing_for_one_artifact_build_it_once(tmp_path):
    home = tmp_path / "lab"  # a fresh lab: the world and pretrain are missing for both jobs
    jobs = [rlhf_lab("stage=pretrain", *FAST, "logger=csv", home=home, cwd=tmp_path) for _ in range(2)]
    results = [finish(job) for job in jobs]
    assert all(code == 0 for code, _ in results), [out[-2000:] for _, out in results]
    output = "".join(out for _, out in results)
    assert output.count("building the tiny world") == 1
    assert output.count("pretrain: building artifact") == 1
    assert output.count("pretrain: reusing artifact") == 1
    assert "waiting for another job building" in output
    assert len([p for p in (home / "artifacts" / "pretrain").iterdir() if not p.name.startswith(".")]) == 1


@pytest.fixture(scope="module")
def joblib_sweep(quickstart, home, tmp_path_factory):
    """rloo at two β values and one deliberately bad β, through the joblib launcher, logged to W&B."""
    cwd = tmp_path_factory.mktemp("cwd")
    sweep_dir = tmp_path_factory.mktemp("sweep")
    code, output = run(
        "-m",
        "stage=rl",
        *SETTINGS,
        "algo=rloo",
        "algo.kl.beta=0.05,0.2,-1",
        "logger=wandb",
        "hydra/launcher=local_parallel",
        f"hydra.sweep.dir={sweep_dir}",
        home=home,
        cwd=cwd,
    )
    return code, output, sweep_dir


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


def test_wandb_offline_runs_hold_the_config_group_tags_and_metrics(joblib_sweep):
    _, _, sweep_dir = joblib_sweep
    [log_file] = (sweep_dir / "0" / "rl" / "wandb").glob("offline-run-*/run-*.wandb")
    wb = read_run(log_file)
    assert wb["group"] == f"rl/{sweep_dir.name}" and wb["job_type"] == "rl"
    assert {"rl", "algo=rloo", "algo.kl.beta=0.05"} <= set(wb["tags"])
    assert wb["config"]["algo"]["kl"]["beta"] == 0.05 and wb["config"]["algo"]["name"] == "rloo"
    assert len(wb["history"]["rl/train/reward"]) == 2 and "rl/eval/gold" in wb["history"]


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
    assert names == ["bon_vs_rl.png", "gold_vs_kl.png", "learning_curves.png", "overoptimization.png"]
    assert all(p.stat().st_size > 10_000 for p in plots)


def test_the_report_command_names_a_missing_directory(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "rlhf_lab.report", str(tmp_path / "nowhere")], capture_output=True, text=True
    )
    assert result.returncode == 2 and "nowhere: no such run or multirun directory" in result.stderr


def test_a_sweep_through_the_submitit_local_launcher(home, tmp_path):
    code, output = run(
        "-m",
        "stage=sft",
        *FAST,
        "sft.lr=1e-3",
        "logger=csv",
        "hydra/launcher=submitit_local_jobs",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        home=home,
        cwd=tmp_path,
    )
    assert code == 0, output[-3000:]
    [result] = (tmp_path / "sweep").glob("*/result.json")
    assert json.loads(result.read_text())["metrics"]["sft/val/loss"] > 0
    assert list((tmp_path / "sweep" / ".submitit").glob("*/*_log.out"))  # submitit ran the job


def test_optuna_sweeper_minimizes_the_returned_metric(home, tmp_path):
    code, output = run(
        "hparams_search=sft_optuna",
        "hydra.sweeper.n_trials=2",
        *FAST,
        "sft.max_steps=5",
        "logger=csv",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        home=home,
        cwd=tmp_path,
    )
    assert code == 0, output[-3000:]
    best = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    results = (tmp_path / "sweep").glob("*/result.json")
    losses = [json.loads(p.read_text())["metrics"]["sft/val/loss"] for p in results]
    assert len(losses) == 2 and best["best_value"] == pytest.approx(min(losses))
    assert set(best["best_params"]) == {"sft.lr"}  # warmup_steps is fixed by the FAST overrides


def execute_notebook(name: str, cwd: Path) -> None:
    """Run every cell of notebooks/<name> in a fresh kernel; a failing cell raises with its traceback."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(Path(__file__).parent.parent / "notebooks" / name, as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    ).execute()


def test_the_walkthrough_notebook_runs(tmp_path):
    execute_notebook("walkthrough.ipynb", tmp_path)


def test_the_sweep_analysis_notebook_runs_on_a_sweep(joblib_sweep, tmp_path, monkeypatch):
    _, _, sweep_dir = joblib_sweep
    monkeypatch.setenv("RLHF_LAB_SWEEP", str(sweep_dir))
    execute_notebook("sweep_analysis.ipynb", tmp_path)
    assert (sweep_dir / "report" / "gold_vs_kl.png").is_file()
