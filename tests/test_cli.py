"""The `rlhf-lab` command as a user runs it: a subprocess, a run directory, W&B offline files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from rlhf_lab.artifacts import read_manifest
from tests.helpers import DEBUG, rlhf_lab


@pytest.mark.slow
def test_sft_run_directory_records_config_overrides_commit_and_versions(tmp_path):
    home = tmp_path / "lab"
    result = rlhf_lab("stage=sft", DEBUG, "logger=wandb", home=home, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    [run_dir] = (home / "runs" / "sft").iterdir()
    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert config["stage"] == "sft" and config["sft"]["max_steps"] == 20
    assert "logger=wandb" in yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["versions"]["torch"] and info["versions"]["transformers"] and "git_commit" in info
    result_record = json.loads((run_dir / "result.json").read_text())
    assert result_record["metrics"]["sft/val/loss"] > 0
    # sft built its upstream pretrain artifact in the same run: one W&B run per stage, offline
    offline_runs = sorted(p.parents[2].name for p in run_dir.glob("*/wandb/offline-run-*/files"))
    assert offline_runs == ["pretrain", "sft"]
    # a second run reuses both artifacts instead of training
    again = rlhf_lab("stage=sft", DEBUG, home=home, cwd=tmp_path)
    assert again.returncode == 0 and "sft: reusing artifact" in again.stderr + again.stdout


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["pretrain", "sft", "collect", "reward", "rl", "dpo", "bon", "eval"])
def test_the_debug_preset_runs_every_stage(stage, lab_home, tmp_path):
    """`rlhf-lab debug=fast stage=<stage>` as a user types it, in the session's lab: in this order each
    stage finds its upstream artifacts built (label serves until stopped: tests/test_label_server.py)."""
    run_dir = tmp_path / "run"
    result = rlhf_lab(DEBUG, f"stage={stage}", f"hydra.run.dir={run_dir}", home=lab_home, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((run_dir / "result.json").read_text())
    assert record["status"] == "completed"
    assert read_manifest(Path(record["artifacts"][stage]))["metrics"]  # the stage's artifact, written


def test_bad_value_fails_fast_naming_the_key(tmp_path):
    result = rlhf_lab("sft.lr=-1", home=tmp_path / "lab", cwd=tmp_path)
    assert result.returncode != 0
    assert "sft.lr: must be > 0, got -1.0" in result.stderr
    assert not (tmp_path / "lab" / "world").exists()  # nothing was built


def test_help_lists_groups_and_options(tmp_path):
    result = rlhf_lab("--help", home=tmp_path / "lab", cwd=tmp_path)
    assert result.returncode == 0
    for line in (
        "stage: bon, collect, dpo, eval, label, pretrain, reward, rl, sft",
        "algo: cispo, dapo, dr_grpo, gmpo, grpo, gspo, ppo, ppo_critic, reinforce, reinforce_pp, rloo, sapo",
        "peft: lora, none",
        "trainer: cpu, ddp, deepspeed_zero2, deepspeed_zero3, fsdp, gpu",
    ):
        assert line in result.stdout


def test_the_commit_is_read_once_per_process(monkeypatch):
    """A long process (a protocol's runs) records the code it loaded, not a commit made while it ran."""
    from rlhf_lab import runinfo

    first = runinfo.git_commit()

    def moved(*args, **kwargs):
        raise AssertionError("git read again")

    monkeypatch.setattr(runinfo.subprocess, "run", moved)
    assert runinfo.git_commit() == first
