"""Lightning DDP on CPU (gloo, 2 processes) through the CLI, as on a multi-GPU machine: the stages
finish, every rank ends with the same weights, and one run directory and one W&B run per stage exist."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhf_lab.config import validate
from tests.helpers import DEBUG, SMALL, compose_config, held_out_metrics, run

pytestmark = pytest.mark.slow

DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "logger=wandb"]
RL_DDP = [
    "stage=rl",
    "algo=rloo",
    "objective=length",
    "rl.max_steps=3",
    "rl.rollouts_per_step=8",
    "rl.sampling.max_new_tokens=12",
    "rl.eval_prompts=8",
    "rl.eval_every=2",
    "rl.checkpoint_every=1",
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return tmp_path_factory.mktemp("ddp_lab")


def check_run(home, stage: str, output: str, built: list[str]) -> dict:
    [run_dir] = (home / "runs" / stage).iterdir()  # the ranks share one run directory
    for name in built:
        assert len(list((run_dir / name / "wandb").glob("offline-run-*"))) == 1  # one W&B run, rank 0's
    # rank 0 and rank 1 each log the check once per trained stage
    assert output.count("all 2 ranks end with the same weights") + (
        run_dir / "train_ddp_process_1.log"
    ).read_text().count("all 2 ranks end with the same weights") >= 2 * len(built)
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "completed"
    return result


def test_pretrain_sft_and_reward_under_ddp(lab, tmp_path):
    code, output = run("stage=reward", DEBUG, *SMALL, *DDP, home=lab, cwd=tmp_path)
    assert code == 0, output[-3000:]
    # three trained stages; collect ran on rank 0 alone
    result = check_run(lab, "reward", output, ["pretrain", "sft", "reward"])
    # the validation metrics cover every rank's pairs: those of the exported model on the whole split
    expected = held_out_metrics(validate(compose_config(*SMALL, *DDP)), Path(result["artifacts"]["reward"]))
    for key in ("accuracy", "gold_accuracy", "bt_ceiling", "gold_label_accuracy", "ece"):
        assert result["metrics"][f"reward/val/{key}"] == pytest.approx(expected[key], abs=1e-6), key


def test_rl_under_ddp(lab, tmp_path):
    code, output = run(*RL_DDP, DEBUG, *DDP, home=lab, cwd=tmp_path)
    assert code == 0, output[-3000:]
    result = check_run(lab, "rl", output, ["rl"])
    assert {"rl/train/kl", "rl/train/reward", "rl/eval/win_rate"} <= set(result["metrics"])
