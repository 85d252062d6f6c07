"""Pipelines as researchers run them, through the CLI: the quickstart from pretraining to the summary,
the artifact cache (reuse, `cache=false`, interrupted stages) and two jobs racing for one artifact."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from rlhf_lab.artifacts import is_complete
from rlhf_lab.pipeline import STAGES as STAGE_TABLE
from rlhf_lab.pipeline import artifact_dir, ensure
from tests.helpers import DEBUG, PIPELINE, SMALL, STAGES, finish, run, start


@pytest.mark.slow
def test_quickstart_runs_every_stage_and_ends_with_a_summary(quickstart, lab_home, tmp_path):
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

    code, again = run("experiment=quickstart", *PIPELINE, home=lab_home, cwd=tmp_path)
    assert code == 0, again[-3000:]
    assert "building artifact" not in again
    assert sorted(re.findall(r"(\w+): reusing artifact", again)) == sorted(STAGES)  # each stage once


@pytest.mark.slow
def test_cache_false_rebuilds_the_named_stage_and_reuses_its_inputs(quickstart, lab_home, tmp_path):
    code, output = run("stage=bon", "cache=false", *PIPELINE, home=lab_home, cwd=tmp_path)
    assert code == 0, output[-3000:]
    assert "bon: building artifact" in output
    assert "sft: reusing artifact" in output and "reward: reusing artifact" in output


@pytest.mark.slow
def test_an_interrupted_stage_leaves_no_artifact_and_is_built_next_time(make_cfg, tmp_path, monkeypatch):
    cfg = make_cfg("stage=bon", *SMALL, "bon.n=[1,2,3]")  # a key of its own

    def interrupted(ctx, out):
        (out / "bon.json").write_text("[]")  # half-written output
        raise KeyboardInterrupt

    real = STAGE_TABLE["bon"]
    monkeypatch.setitem(STAGE_TABLE, "bon", dataclasses.replace(real, build=interrupted))
    with pytest.raises(KeyboardInterrupt):
        ensure(cfg, "bon", tmp_path)
    assert not is_complete(artifact_dir(cfg, "bon")) and not artifact_dir(cfg, "bon").exists()
    monkeypatch.setitem(STAGE_TABLE, "bon", real)
    out = ensure(cfg, "bon", tmp_path)
    assert is_complete(out) and json.loads((out / "bon.json").read_text())[-1]["n"] == 3


@pytest.mark.slow
def test_two_jobs_racing_for_one_artifact_build_it_once(tmp_path):
    home = tmp_path / "lab"  # a fresh lab: the world and pretrain are missing for both jobs
    jobs = [start("stage=pretrain", DEBUG, "logger=csv", home=home, cwd=tmp_path) for _ in range(2)]
    results = [finish(job) for job in jobs]
    assert all(code == 0 for code, _ in results), [out[-2000:] for _, out in results]
    output = "".join(out for _, out in results)
    assert output.count("building the tiny world") == 1
    assert output.count("pretrain: building artifact") == 1
    assert output.count("pretrain: reusing artifact") == 1
    assert "waiting for another job building" in output
    assert len([p for p in (home / "artifacts" / "pretrain").iterdir() if not p.name.startswith(".")]) == 1
