"""Numerical faults: a non-finite loss or gradient skips its update instead of poisoning the weights.

Each skip is counted (`<stage>/train/skipped_updates`); `max_nonfinite` skips in a row mean the run is
diverging rather than unlucky, so the guard saves a checkpoint and stops with a message naming the
stage, the step and what to change.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch

log = logging.getLogger(__name__)


class NonFiniteError(FloatingPointError):
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
