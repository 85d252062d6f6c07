"""Numerical faults: non-finite losses or gradients skip their update, are counted, and too many in a
row checkpoint and stop. Faults are injected into the real model with a forward hook."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from rlhf_lab.artifacts import is_complete, read_manifest
from rlhf_lab.faults import NonFiniteError
from rlhf_lab.models import load_causal_lm
from rlhf_lab.pipeline import artifact_dir, ensure
from rlhf_lab.stages import lm
from rlhf_lab.stages.rl import stage as rl
from tests.helpers import DEBUG, RL_FAST, csv_column, finish, run, start

pytestmark = pytest.mark.slow  # every test trains


def inject(monkeypatch, module, faulty_calls, kind: str = "loss"):
    """Make `module`'s loaded models return NaN logits (kind=loss) or NaN gradients (kind=gradient) on
    the given calls of a training forward pass (grad enabled, train mode), counted from 1."""
    calls = {"n": 0}

    def hook(model, args, output):
        if not (model.training and torch.is_grad_enabled()):
            return output
        calls["n"] += 1
        if faulty_calls(calls["n"]):
            if kind == "loss":
                output.logits = output.logits * float("nan")
            else:
                output.logits.register_hook(lambda grad: grad * float("nan"))
        return output

    def loading(*args, **kwargs):
        model = load_causal_lm(*args, **kwargs)
        model.register_forward_hook(hook)
        return model

    monkeypatch.setattr(module, "load_causal_lm", loading)
    return calls


@pytest.mark.parametrize("kind", ["loss", "gradient"])
def test_a_few_faults_skip_their_updates_and_are_counted(kind, make_cfg, tmp_path, monkeypatch):
    cfg = make_cfg(
        "stage=sft", "sft.max_steps=12", "sft.val_every=6", f"sft.lr={3e-4 if kind == 'loss' else 2e-4}"
    )
    ensure(cfg, "pretrain", tmp_path)
    inject(monkeypatch, lm, lambda n: n in (3, 4), kind)
    out = ensure(cfg, "sft", tmp_path)
    assert csv_column(tmp_path, "sft", "sft/train/skipped_updates")[-1] == 2
    weights = torch.cat([p.flatten() for p in AutoModelForCausalLM.from_pretrained(out).parameters()])
    assert torch.isfinite(weights).all()


def test_faults_in_a_row_save_a_checkpoint_and_stop(make_cfg, tmp_path, monkeypatch):
    cfg = make_cfg("stage=sft", "sft.max_nonfinite=3", "sft.lr=4e-4")
    ensure(cfg, "pretrain", tmp_path)
    inject(monkeypatch, lm, lambda n: n >= 5)
    with pytest.raises(
        NonFiniteError, match=r"sft: 3 consecutive updates with a non-finite loss, up to step 6"
    ) as info:
        ensure(cfg, "sft", tmp_path)
    assert "lower sft.lr" in str(info.value)
    assert (tmp_path / "sft" / "checkpoints" / "nonfinite.ckpt").is_file()
    assert not is_complete(artifact_dir(cfg, "sft"))


def test_rl_skips_a_faulty_minibatch_and_counts_it(make_cfg, tmp_path, monkeypatch):
    cfg = make_cfg(*RL_FAST, "algo=grpo", "algo.minibatches=2", "rl.max_steps=2", "rl.lr=5e-4")
    ensure(cfg, "sft", tmp_path)
    inject(monkeypatch, rl, lambda n: n == 2)  # the second minibatch of the first step
    metrics = read_manifest(ensure(cfg, "rl", tmp_path))["metrics"]
    assert metrics["rl/train/skipped_updates"] == 1


def test_an_interrupted_sft_run_resumes_from_its_last_checkpoint(make_cfg, tmp_path, monkeypatch):
    cfg = make_cfg("stage=sft", "sft.max_steps=16", "sft.val_every=8", "sft.lr=6e-4")
    ensure(cfg, "pretrain", tmp_path)

    def crash(model, args, output):
        if model.training and torch.is_grad_enabled():
            crash.calls += 1
            if crash.calls == 12:  # after the step-8 checkpoint
                raise RuntimeError("simulated crash")
        return output

    crash.calls = 0

    def loading(*args, **kwargs):
        model = load_causal_lm(*args, **kwargs)
        model.register_forward_hook(crash)
        return model

    monkeypatch.setattr(lm, "load_causal_lm", loading)
    with pytest.raises(RuntimeError, match="simulated crash"):
        ensure(cfg, "sft", tmp_path / "first")
    assert (
        artifact_dir(cfg, "sft").parent / f".{artifact_dir(cfg, 'sft').name}.partial" / "checkpoints"
    ).is_dir()
    monkeypatch.undo()
    out = ensure(cfg, "sft", tmp_path / "second")  # the same command again
    steps = [int(float(s)) for s in csv_column(tmp_path / "second", "sft", "step")]
    assert min(steps) >= 8  # it went on from the checkpoint, not from step 0
    assert is_complete(out) and not (out / "checkpoints").exists()


def test_a_killed_rl_run_resumes_to_the_same_policy(make_cfg, tmp_path):
    """SIGKILL mid-run, then the same command again: the policy equals an uninterrupted run's, bitwise."""
    import os
    import signal
    import time

    from safetensors.torch import load_file

    from rlhf_lab.artifacts import scratch_dir

    home = Path(os.environ["RLHF_LAB_HOME"])  # the session's lab: its fast SFT is reused
    args = [*RL_FAST, "algo=rloo", "rl.max_steps=6", "rl.checkpoint_every=2", "rl.eval_every=3"]
    artifact = artifact_dir(make_cfg(*args), "rl")
    ensure(make_cfg(*args), "sft", tmp_path)
    job = start(DEBUG, *args, home=home, cwd=tmp_path)
    hung = time.monotonic() + 600  # a guard against a run that hangs, not a check of its speed
    while not (scratch_dir(artifact) / "checkpoints" / "last.ckpt").is_file():
        assert job.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < hung, "no checkpoint after 10 minutes"
        time.sleep(0.2)
    os.kill(job.pid, signal.SIGKILL)
    job.wait()
    code, output = finish(start(DEBUG, *args, home=home, cwd=tmp_path))
    assert code == 0 and "rl: resuming from" in output, output[-2000:]
    resumed = load_file(artifact / "model.safetensors")
    evals = (artifact / "eval.jsonl").read_text()
    code, output = run(DEBUG, *args, "cache=false", "resume=never", home=home, cwd=tmp_path)  # uninterrupted
    assert code == 0 and "resuming" not in output, output[-2000:]
    uninterrupted = load_file(artifact / "model.safetensors")
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted)
    assert evals == (artifact / "eval.jsonl").read_text()
