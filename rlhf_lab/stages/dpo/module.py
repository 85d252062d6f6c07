"""The DPO LightningModule: one optimizer step per batch of preference pairs, manual optimization.

`training_step` reads top to bottom: the round's pairs (online: sampled and labeled at the round's
first step) → this step's batch → micro-batches of both completions, packed without padding → the
loss (`preference_loss`: dpo, cdpo, ipo or simpo, pure functions of `rlhf_lab.losses`) → one AdamW
step → metrics; every `dpo.eval_every` steps and at the end, held-out pairs and held-out samples
(`dpo.metrics`). The batches are a pure function of (seed, round, step) and nothing else is drawn, so
a checkpoint (weights, optimizer, scheduler, the step) resumes a run exactly.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import lightning as L
import torch
from torch import nn

from rlhf_lab.config import Config
from rlhf_lab.data.prompts import encode_prompts
from rlhf_lab.faults import FaultGuard
from rlhf_lab.optim import build_optimizer
from rlhf_lab.policy import PromptStream, Reference, Timer, micro_batches
from rlhf_lab.scorers import Scorer, gold_scorer
from rlhf_lab.seeds import derive_seed, stage_seed
from rlhf_lab.stages.dpo.loss import preference_loss
from rlhf_lab.stages.dpo.metrics import DPOMetrics
from rlhf_lab.stages.dpo.pairs import PairSet, pair_logps
from rlhf_lab.stages.dpo.sources import PairSource


class DPOModule(L.LightningModule):
    """The policy trained on preference pairs; the reference is a frozen copy of it, or (LoRA) the
    policy with its adapter disabled; SimPO has none."""

    def __init__(
        self,
        policy: nn.Module,
        tokenizer,
        cfg: Config,
        source: PairSource,
        reference: Reference | None,
        eval_prompts: list[str],
        scorer: Scorer | None = None,
        out_dir: Path | None = None,
        checkpoint: Path | None = None,
    ):
        super().__init__()
        self.automatic_optimization = False
        self.policy, self.tokenizer, self.cfg, self.settings = policy, tokenizer, cfg, cfg.dpo
        self.reference, self.source, self.scorer = reference, source, scorer
        self.beta = cfg.dpo.resolved_beta()
        self.train()  # models load in eval mode; train mode is harmless: dropout is already off
        self.eval_prompts = eval_prompts
        self.eval_prompt_ids = encode_prompts(
            tokenizer, eval_prompts, cfg.data.max_prompt_length, "eval prompts"
        )
        self.seed = stage_seed(cfg, "dpo")
        self.step_count = 0  # optimizer steps done: the position in the rounds and their pair streams
        self.metrics = DPOMetrics(out_dir)
        self.checkpoint = checkpoint
        self.guard = FaultGuard("dpo", self.settings.max_nonfinite, checkpoint)

    def configure_optimizers(self):
        return build_optimizer(self.policy.named_parameters(), self.settings)

    def on_fit_start(self) -> None:
        self.gold = gold_scorer(self.cfg, self.device)

    def on_train_start(self) -> None:
        self.source.train(self.source.round_of(self.step_count), self.policy)  # round 0 fixes held-out pairs
        self.metrics.start(self)

    def stream(self, r: int, num_pairs: int) -> PromptStream:
        """Round r's pairs in shuffled passes, `dpo.batch_size` a step: a function of (seed, round, step)."""
        return PromptStream(num_pairs, self.settings.batch_size, derive_seed(self.seed, "dpo_pairs", r))

    # ----------------------------------------------------------------------------- the DPO step
    def training_step(self, step: int, batch_idx: int) -> None:
        timer = Timer(self.device)
        r = self.source.round_of(self.step_count)
        with timer("round"):  # online: a round's first step samples, labels and runs the reference
            pairs = self.source.train(r, self.policy)
        with timer("step"):  # the batch, its passes and the update
            first, _ = self.source.bounds(r)
            batch = pairs.select(self.stream(r, len(pairs)).batch(self.step_count - first))
            stats = self.update(batch)
        self.step_count += 1
        tokens, seconds = float(batch.tokens().sum()), max(timer.seconds["step"], 1e-9)
        stats |= {
            "round": float(r),
            "lr": self.optimizers().param_groups[0]["lr"],
            "tokens_per_step": tokens,
            "tokens_per_second": tokens / seconds,
            "pairs_per_second": len(batch) / seconds,
            **{f"time/{k}": v for k, v in timer.seconds.items()},
        }
        self.metrics.log_step(self, stats)

    def update(self, batch: PairSet) -> dict[str, float]:
        """One AdamW step on `batch`, its gradient summed over micro-batches of about
        `dpo.micro_batch_tokens` tokens (each loss weighted by its share of the pairs); its metrics."""
        optimizer = self.optimizers()
        optimizer.zero_grad()
        pad, n = self.tokenizer.pad_token_id, len(batch)
        totals: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=self.device))
        for index in micro_batches(batch.tokens(), self.settings.micro_batch_tokens):
            part = batch.select(index)
            logps = pair_logps(self.policy, part, pad)
            loss, chosen, rejected = preference_loss(self.settings, self.beta, logps, part)
            if not self.guard.check_loss(self, loss, self.step_count):
                optimizer.zero_grad()
                self.lr_schedulers().step()
                return {"skipped_updates": float(self.guard.skipped)}
            self.manual_backward(len(part) / n * loss)
            margin = chosen - rejected  # (b,)
            for key, value in {
                "loss": len(part) * loss.detach(),
                "accuracy": (margin > 0).float().sum(),
                "margin": margin.sum(),
                "chosen_reward": chosen.sum(),
                "rejected_reward": rejected.sum(),
                "chosen_logps": logps.chosen.detach().sum(),
                "rejected_logps": logps.rejected.detach().sum(),
            }.items():
                totals[key] += value
        stats = {k: (v / n).item() for k, v in totals.items()}
        grad_norm = self.guard.check_grads(self, self.step_count)
        if grad_norm is not None:
            self.clip_gradients(optimizer, self.settings.grad_clip or None, "norm")
            optimizer.step()
            stats["grad_norm"] = float(grad_norm)
        self.lr_schedulers().step()
        return stats | {"skipped_updates": float(self.guard.skipped)}

    # ---------------------------------------------------------------------------- checkpoints
    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        """A checkpoint every dpo.checkpoint_every steps and at the end of each round (so that a run
        killed while sampling the next round resumes from the policy that samples it)."""
        step, settings = self.step_count, self.settings
        round_end = step == self.source.bounds(self.source.round_of(step - 1))[1]
        due = step % settings.checkpoint_every == 0 or (round_end and self.source.rounds > 1)
        if due and step < settings.max_steps and self.checkpoint is not None:
            self.trainer.save_checkpoint(self.checkpoint)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["dpo"] = {"step_count": self.step_count, "sft_gold": self.metrics.sft_gold}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["dpo"]
        self.step_count, self.metrics.sft_gold = state["step_count"], state["sft_gold"]
        self.metrics.keep_evals_until(self.step_count)
