"""rlhf-lab-rescore: a run's saved held-out samples rescored with any scorer. On the session's RL sweep
(two RLOO runs under gold=vader, after the quickstart): the gold it trained with gives back its logged
gold curve exactly, its reward model its logged proxy, another gold other numbers; eval_history.jsonl
holds every evaluation's samples. Fast: the errors for people, a run from before the history."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf_lab.artifacts import read_manifest
from rlhf_lab.errors import UserError
from rlhf_lab.evaluation import EVAL_HISTORY, EVALS
from rlhf_lab.report.rescore import CSV_FILE, PLOT_FILE, main, rescore
from rlhf_lab.report.runs import find_runs
from rlhf_lab.scorers import GoldScorer

ROOT = Path(__file__).resolve().parents[1]


def rescore_command(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rlhf_lab.report.rescore", *args], cwd=cwd, capture_output=True, text=True
    )


# ------------------------------------------------------------------------------ the session's RL runs
@pytest.fixture(scope="module")
def sweep(joblib_sweep) -> tuple[Path, list[Path]]:
    """(the sweep folder, its completed runs' RL artifacts)."""
    _, _, sweep_dir = joblib_sweep
    artifacts = [Path(r.artifacts["rl"]) for r in find_runs(sweep_dir) if "rl" in r.artifacts]
    assert len(artifacts) == 2, "the sweep's two completed runs"
    return sweep_dir, artifacts


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_the_history_holds_one_row_per_eval_prompt_per_evaluation(sweep):
    for artifact in sweep[1]:
        evals, history = read_jsonl(artifact / EVALS), read_jsonl(artifact / EVAL_HISTORY)
        prompts = read_manifest(artifact)["config"]["rl"]["eval_prompts"]
        steps = [e["step"] for e in evals]
        assert steps == [0, 2] and len(history) == len(steps) * prompts
        by_step = {s: [r for r in history if r["step"] == s] for s in steps}
        assert all(len(rows) == prompts for rows in by_step.values())
        assert len({tuple(r["prompt"] for r in rows) for rows in by_step.values()}) == 1, "the same prompts"
        assert set(history[0]) == {"step", "prompt", "completion"}


@pytest.mark.slow
def test_rescoring_with_the_training_gold_gives_the_logged_curve_exactly(sweep, tmp_path):
    sweep_dir, artifacts = sweep
    reward = read_manifest(artifacts[0])["inputs"]["reward"]  # the runs' proxy: their objective
    messages = []
    result = rescore(sweep_dir, ["vader", "reader", reward], tmp_path, say=messages.append)

    assert {r["run"] for r in result.rows} == {"0", "1"}
    assert [r["step"] for r in result.rows] == [0, 2, 0, 2]
    for row in result.rows:
        assert row["vader"] == row["logged_gold"], row  # the gold the runs trained with (gold=vader)
        # the reward model scores with matrix products, whose last bits may follow the thread count
        assert row[reward] == pytest.approx(row["logged_reward"], abs=1e-5), row
    assert any(r["reader"] != r["vader"] for r in result.rows), "another gold, other numbers"
    assert messages == [f"{sweep_dir / '2'}: failed run with no RL or DPO artifact, skipped"]

    rows = list(csv.DictReader(open(tmp_path / CSV_FILE)))
    assert list(rows[0]) == [
        "run",
        "configuration",
        "step",
        "kl",
        "sqrt_kl",
        "logged_gold",
        "logged_reward",
        "vader",
        "reader",
        reward,
    ]
    assert len(rows) == 4 and all(float(r["vader"]) == float(r["logged_gold"]) for r in rows)
    assert rows[0]["configuration"] == "algo.kl.beta=0.05"
    assert (tmp_path / PLOT_FILE).stat().st_size > 0


@pytest.mark.slow
def test_the_command_rescores_one_artifact_and_prints_a_table(sweep, tmp_path):
    artifact = sweep[1][0]
    done = rescore_command(str(artifact), "--score", "vader", "--out", str(tmp_path), cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"| {artifact.name} | 2 |" in done.stdout and "vader: final (peak @ step)" in done.stdout
    assert (tmp_path / CSV_FILE).is_file() and (tmp_path / PLOT_FILE).is_file()


# ------------------------------------------------------------------------------ fast: errors, old runs
def fake_artifact(folder: Path, history: bool = True) -> Path:
    """An RL artifact's evaluations at steps 0 and 5, logged under the vader gold."""
    folder.mkdir(parents=True)
    samples = {0: ["It was a good film.", "The plot was dull."], 5: ["Wonderful!", "Awful acting."]}
    prompts = ["The film", "The plot"]
    evals, rows = [], []
    for step, completions in samples.items():
        gold = GoldScorer("vader").score(prompts, completions).mean().item()
        evals.append({"step": step, "gold": gold, "reward": 0.0, "kl": float(step)})
        rows += [
            {"step": step, "prompt": p, "completion": c} for p, c in zip(prompts, completions, strict=True)
        ]
    (folder / EVALS).write_text("".join(json.dumps(e) + "\n" for e in evals))
    if history:
        (folder / EVAL_HISTORY).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_an_artifact_is_rescored_into_the_current_folder_by_default(tmp_path, monkeypatch):
    artifact = fake_artifact(tmp_path / "abc123")
    monkeypatch.chdir(tmp_path)
    result = rescore(artifact, ["vader", "careful"])
    assert [r["vader"] for r in result.rows] == [r["logged_gold"] for r in result.rows]
    assert [r["sqrt_kl"] for r in result.rows] == [0.0, 5**0.5]
    assert result.csv == Path("rescore/abc123") / CSV_FILE and result.csv.is_file()


def test_a_run_from_before_the_history_is_named_and_skipped(tmp_path, capsys):
    old = fake_artifact(tmp_path / "old", history=False)
    with pytest.raises(SystemExit) as stop:
        main([str(old), "--score", "vader", "--out", str(tmp_path / "out")])
    assert f"{old}: no {EVAL_HISTORY} (built before it existed), skipped" in capsys.readouterr().err
    assert "nothing to rescore" in str(stop.value.code)


def test_a_missing_path_or_an_unknown_score_is_an_error_without_traceback(tmp_path):
    with pytest.raises(UserError, match="no such folder"):
        rescore(tmp_path / "nowhere", ["vader"])
    with pytest.raises(UserError, match="neither an RL or DPO artifact folder"):
        rescore(tmp_path, ["vader"])  # an empty folder: no artifact, no runs
    artifact = fake_artifact(tmp_path / "run")
    done = rescore_command(str(artifact), "--score", "vadr", cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("rlhf-lab-rescore: --score 'vadr' is neither a gold of the world"), (
        done.stderr
    )
    done = rescore_command(str(tmp_path / "nowhere"), "--score", "vader", cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr and "no such folder" in done.stderr
