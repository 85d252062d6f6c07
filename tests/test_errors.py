"""Errors for people: a bad config, a bad data row or a missing file ends `rlhf-lab` with its message
alone and exit code 1, and `result.json` records it; a SIGTERM saves a checkpoint of the step reached
(`faults.SaveOnSigterm`) and ends it with exit code 143, and the same command resumes from there."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from rlhf_lab.config import ConfigError, validate
from rlhf_lab.data.formats import BadRow
from rlhf_lab.data.sources import DataError
from rlhf_lab.errors import UserError
from rlhf_lab.faults import NonFiniteError, SaveOnSigterm
from tests.helpers import DEBUG, RL_FAST, compose_config, finish, rlhf_lab, saved_weights, start, write_jsonl


def results(home: Path) -> list[dict]:
    """Every result.json below the lab's runs folder, oldest first."""
    return [json.loads(p.read_text()) for p in sorted((home / "runs").rglob("result.json"))]


def test_errors_in_the_users_input_share_one_base():
    for error in (ConfigError, DataError, BadRow, NonFiniteError):
        assert issubclass(error, UserError), error
    assert issubclass(ConfigError, ValueError) and issubclass(DataError, ValueError)  # as before


# ------------------------------------------------------------------------------------ the command
def test_a_bad_config_prints_its_message_alone_and_exits_1(tmp_path):
    done = rlhf_lab("stage=rl", "algo.kl.beta=-1", home=tmp_path, cwd=tmp_path)
    assert done.returncode == 1
    assert "algo.kl.beta: must be >= 0, got -1.0" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    (result,) = results(tmp_path)
    assert result["status"] == "failed" and "algo.kl.beta" in result["error"]
    assert "Traceback" in result["traceback"]  # kept for whoever debugs it


def test_hydra_full_error_shows_the_traceback(tmp_path):
    done = rlhf_lab("stage=rl", "algo.kl.beta=-1", home=tmp_path, cwd=tmp_path, HYDRA_FULL_ERROR="1")
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "ConfigError: invalid configuration" in done.stderr


def test_a_model_path_that_is_no_folder_and_no_hub_id_is_named_before_anything_is_built(tmp_path):
    done = rlhf_lab("stage=rl", "rl.policy=/nonexistent/folder", home=tmp_path, cwd=tmp_path)
    assert done.returncode == 1
    named = [line.strip() for line in done.stderr.splitlines() if "no such folder" in line]
    assert named == ["rl.policy: no such folder: /nonexistent/folder"], done.stderr
    assert "Traceback" not in done.stderr + done.stdout and "Repo id" not in done.stderr, done.stderr
    assert not (tmp_path / "world").exists() and not (tmp_path / "artifacts").exists()  # nothing built


@pytest.mark.parametrize(
    "override, message",
    [("algo.nope=1", "Key 'nope' not in 'AlgoConfig'"), ("rl.max_steps=abc", "could not be converted")],
)
def test_hydra_composition_errors_print_without_a_traceback(override, message, tmp_path):
    done = rlhf_lab("stage=rl", override, home=tmp_path, cwd=tmp_path)
    assert done.returncode == 1 and message in done.stderr
    assert "Traceback" not in done.stderr + done.stdout, done.stderr


def test_a_sweep_records_each_jobs_bad_row_or_missing_file(tmp_path):
    """A malformed preference row (job 0) and a missing file (job 1): each job's result.json says why,
    the command exits 1 with job 0's message alone, and each failure is logged."""
    bad = write_jsonl(
        tmp_path / "bad.jsonl",
        [{"prompt": "a", "chosen": "b", "rejected": "c"}, {"prompt": "a", "chosen": 3, "rejected": "c"}],
    )
    common = ["stage=reward", "model=hf", "model.name_or_path=unused", "reward_model.init=pretrain"]
    paths = f"data.preferences.path={bad},{tmp_path / 'missing.jsonl'}"
    done = rlhf_lab("-m", *common, paths, home=tmp_path, cwd=tmp_path)
    row_message = f"{bad}: row 1, field 'chosen': expected str as in earlier rows, got int"
    assert done.returncode == 1 and row_message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    assert "job 1 failed: " in done.stdout and "missing.jsonl" in done.stdout
    first, second = results(tmp_path)
    assert first["status"] == second["status"] == "failed"
    assert row_message in first["error"] and "missing.jsonl" in second["error"]


# ------------------------------------------------------------------------------------ SIGTERM
class Quadratic(L.LightningModule):
    """One linear layer pulled towards zero on the same batch every time (so that where an epoch
    restarts does not matter), with momentum (so that the optimizer state does); SIGTERM to itself
    during training batch `kill_at` (counted from 1)."""

    def __init__(self, kill_at: int | None = None):
        super().__init__()
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(4, 1)
        self.kill_at, self.batches = kill_at, 0

    def training_step(self, batch, batch_idx):
        self.batches += 1
        if self.batches == self.kill_at:
            os.kill(os.getpid(), signal.SIGTERM)  # Lightning's handler notes it; the batch goes on
        return self.layer(batch).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.ones(16, 4), batch_size=2)


def fit(path: Path, kill_at: int | None, accumulate: int, resume: bool = False) -> Quadratic:
    module = Quadratic(kill_at)
    trainer = L.Trainer(
        max_steps=6,
        accumulate_grad_batches=accumulate,
        callbacks=[SaveOnSigterm(path)],
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, ckpt_path=str(path) if resume else None)
    return module


@pytest.mark.parametrize("accumulate", [1, 2])
def test_sigterm_saves_the_step_reached_and_resumes_to_the_same_weights(accumulate, tmp_path):
    """SIGTERM during batch 3: Lightning stops after it (with accumulation, after batch 4, the end of the
    optimizer step: a checkpoint holds no partial gradients); the checkpoint resumes to the weights of a
    run that was never stopped."""
    path = tmp_path / "checkpoints" / "last.ckpt"
    with pytest.raises(SIGTERMException):
        fit(path, kill_at=3, accumulate=accumulate)
    checkpoint = torch.load(path, weights_only=False)
    assert checkpoint["global_step"] == (3 if accumulate == 1 else 2)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the Trainer put the handler back

    resumed = fit(path, kill_at=None, accumulate=accumulate, resume=True)
    assert resumed.batches == 6 * accumulate - (3 if accumulate == 1 else 4)
    uninterrupted = fit(tmp_path / "unused.ckpt", kill_at=None, accumulate=accumulate)
    for a, b in zip(resumed.parameters(), uninterrupted.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.slow
def test_an_rl_run_sent_sigterm_exits_non_zero_and_resumes_to_the_same_policy(tmp_path):
    """SIGTERM a few RL steps in (no periodic checkpoint before it), then the same command again: the
    policy and the evaluations equal an uninterrupted run's, bitwise."""
    from rlhf_lab.artifacts import scratch_dir
    from rlhf_lab.pipeline import artifact_dir

    home = Path(os.environ["RLHF_LAB_HOME"])  # the session's lab: its fast SFT is reused
    args = [DEBUG, *RL_FAST, "algo=rloo", "rl.max_steps=10", "rl.checkpoint_every=1000", "rl.eval_every=1"]
    artifact = artifact_dir(validate(compose_config(*args, fast=False)), "rl")
    evals = scratch_dir(artifact) / "eval.jsonl"
    job = start(*args, home=home, cwd=tmp_path)
    deadline = time.time() + 900
    while not (evals.is_file() and len(evals.read_text().splitlines()) >= 3):  # steps 0, 1 and 2
        assert job.poll() is None and time.time() < deadline, "the run ended before its second step"
        time.sleep(0.1)
    job.send_signal(signal.SIGTERM)
    code, output = finish(job)
    assert code == 143, output[-3000:]
    assert (scratch_dir(artifact) / "checkpoints" / "last.ckpt").is_file()
    assert "stopped by SIGTERM" in output and "Traceback" not in output, output[-3000:]
    stopped = [r for r in results(home) if r.get("status") == "stopped"]
    assert stopped and stopped[-1]["stage"] == "rl"

    code, output = finish(start(*args, home=home, cwd=tmp_path))  # the same command again
    assert code == 0 and "rl: resuming from" in output, output[-3000:]
    resumed, resumed_evals = saved_weights(artifact), (artifact / "eval.jsonl").read_text()
    assert len(resumed_evals.splitlines()) == 11  # steps 0..10, none lost or repeated

    code, output = finish(start(*args, "cache=false", "resume=never", home=home, cwd=tmp_path))
    assert code == 0 and "resuming" not in output, output[-3000:]
    uninterrupted = saved_weights(artifact)
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted)
    assert resumed_evals == (artifact / "eval.jsonl").read_text()
