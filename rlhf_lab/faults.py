"""Faults during training: non-finite numbers, and a SIGTERM.

Numerical faults: a non-finite loss or gradient skips its update instead of poisoning the weights.
Each skip is counted (`<stage>/train/skipped_updates`); `max_nonfinite` skips in a row mean the run is
diverging rather than unlucky, so the guard saves a checkpoint and stops with a message naming the
stage, the step and what to change.

A SIGTERM (a scheduler's preemption, `kill`): every Lightning stage carries `SaveOnSigterm(path)`, which
saves a checkpoint of the step reached to the stage's resumable checkpoint, so that the same command
resumes from it; the command then exits with code 143 and `result.json` says "stopped".
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from rlhf_lab.errors import Stopped, UserError

log = logging.getLogger(__name__)


class NonFiniteError(UserError, FloatingPointError):
    """Too many consecutive non-finite losses or gradients."""


class FaultGuard:
    def __init__(self, stage: str, patience: int, checkpoint: Path | None, section: str | None = None):
        """`section`: the config section of the stage's training settings (default: the stage name)."""
        self.stage, self.patience, self.checkpoint = stage, patience, checkpoint
        self.section = section or stage
        self.consecutive = 0
        self.skipped = 0

    def check_loss(self, module: L.LightningModule, loss: torch.Tensor, step: int) -> bool:
        """True if `loss` is finite; else count a skipped update (or stop, see the module docstring)."""
        return self._record(module, _everywhere(module, bool(torch.isfinite(loss).all())), "loss", step)

    def check_grads(self, module: L.LightningModule, step: int) -> torch.Tensor | None:
        """The total gradient norm if every gradient is finite; else None, after dropping all gradients
        (the optimizer then skips every parameter) and counting a skipped update.

        One norm over all gradients decides: it is non-finite iff some gradient is (or so large that
        its square overflows, which counts as diverged too).
        """
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        if not grads:  # the update was already skipped (a non-finite loss): nothing to judge
            return torch.zeros(())
        norm = torch.nn.utils.get_total_norm(grads)  # ()
        finite = _everywhere(module, bool(torch.isfinite(norm)))
        if not finite:
            for p in module.parameters():
                p.grad = None
        return norm if self._record(module, finite, "gradient", step) else None

    def _record(self, module: L.LightningModule, finite: bool, what: str, step: int) -> bool:
        if finite:
            self.consecutive = 0
            return True
        self.consecutive += 1
        self.skipped += 1
        log.warning(
            "%s: non-finite %s at step %d, update skipped (%d in a row, %d in all)",
            self.stage,
            what,
            step,
            self.consecutive,
            self.skipped,
        )
        if self.consecutive >= self.patience:
            self._stop(module, what, step)
        return False

    def _stop(self, module: L.LightningModule, what: str, step: int) -> None:
        saved = ""
        if self.checkpoint is not None:
            self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
            module.trainer.save_checkpoint(self.checkpoint)
            saved = f" The last finite state is saved in {self.checkpoint}."
        raise NonFiniteError(
            f"{self.stage}: {self.consecutive} consecutive updates with a non-finite {what}, "
            f"up to step {step} "
            f"({self.skipped} updates skipped in all).{saved} The run is diverging: lower "
            f"{self.section}.lr, keep gradient clipping on ({self.section}.grad_clip), or check the data; "
            f"{self.section}.max_nonfinite sets how many skips in a row are tolerated."
        )


def _everywhere(module: L.LightningModule, finite: bool) -> bool:
    """True only if every rank saw finite values: all ranks skip together, so their weights stay equal."""
    return bool(module.trainer.strategy.reduce_boolean_decision(finite, all=True))


def stopped_by_sigterm(error: BaseException) -> bool:
    """Whether `error` ends a run stopped by SIGTERM: Lightning's SIGTERMException (raised after the training
    batch during which the signal came) or `errors.Stopped` (the signal came outside a Trainer)."""
    return isinstance(error, (SIGTERMException, Stopped))


class SaveOnSigterm(Callback):
    """On SIGTERM, save a checkpoint of the step reached to `path` (the checkpoint the stage resumes from).

    Lightning notes the signal and raises its SIGTERMException after the current training batch; this
    callback then saves the checkpoint (`on_exception`), through a temporary file so that a kill during the
    save leaves the previous checkpoint intact. A signal in the middle of gradient accumulation is held
    until the optimizer step ends the accumulation: a checkpoint holds no partial gradients. A signal
    during a validation keeps the checkpoint saved before it (the weights have not changed since).
    The exception goes on, and the command exits with code 143 (`cli`).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._held = False  # a SIGTERM waits for the end of the accumulation
        self._stepped = False  # the optimizer stepped during this training batch

    def on_train_batch_start(self, trainer: L.Trainer, *args) -> None:
        self._stepped = False

    def on_before_optimizer_step(self, trainer: L.Trainer, *args) -> None:
        self._stepped = True

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        # Lightning exposes the flag read-only: its signal connector holds it
        connector = getattr(trainer, "_signal_connector", None)
        if connector is None or trainer.accumulate_grad_batches == 1:
            return
        if trainer.received_sigterm and not self._stepped:  # Lightning would stop mid-accumulation
            connector.received_sigterm, self._held = False, True
            log.warning("SIGTERM received: stopping at the end of the gradient accumulation")
        elif self._held and self._stepped:
            connector.received_sigterm, self._held = True, False

    def on_exception(self, trainer: L.Trainer, module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException):
            return
        if trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking or trainer.validating:
            log.warning("SIGTERM received outside a training step: the last checkpoint %s is kept", self.path)
            return
        partial = self.path.with_name(self.path.name + ".partial")
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(partial, weights_only=False)  # every rank takes part; rank 0 writes
        if trainer.is_global_zero:
            os.replace(partial, self.path)
            log.warning(
                "SIGTERM received: stopped after training batch %d (optimizer step %d); saved %s, "
                "from which the same command resumes",
                trainer.fit_loop.epoch_loop.batch_progress.total.completed,
                trainer.global_step,
                self.path,
            )
