"""Causal-LM training shared by `pretrain` and `sft`: one LightningModule and the fit driver."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import lightning as L
import torch

from rlhf_lab.artifacts import worker_rank
from rlhf_lab.config import LMTrainConfig, PeftConfig
from rlhf_lab.data.lm import LMDataModule
from rlhf_lab.faults import FaultGuard
from rlhf_lab.losses import causal_lm_loss, token_nll
from rlhf_lab.models import apply_peft, export_model, load_causal_lm, load_tokenizer
from rlhf_lab.optim import build_optimizer
from rlhf_lab.rollout import generate_text
from rlhf_lab.seeds import stage_seed
from rlhf_lab.stages.common import CHECKPOINTS, fit

log = logging.getLogger(__name__)


class CausalLMModule(L.LightningModule):
    """Next-token training of an HF causal LM; labels decide which tokens carry loss.

    Logs `<stage>/train/loss`, `<stage>/train/lr`, `<stage>/val/loss`, `<stage>/val/ppl`, and a
    table of sample generations from held-out prompts at each validation.
    """

    def __init__(
        self,
        model,
        tokenizer,
        cfg: LMTrainConfig,
        stage: str,
        sample_prompts: list[str],
        log_dir: Path | None = None,
        table_every: int = 1,
    ):
        super().__init__()
        self.model, self.tokenizer, self.cfg, self.stage = model, tokenizer, cfg, stage
        self.sample_prompts = sample_prompts[: cfg.samples]
        self.samples_file = log_dir / "samples.jsonl" if log_dir else None
        self.table_every = table_every
        self._val_nll: list[torch.Tensor] = []
        self._validations = 0
        checkpoint = log_dir / "checkpoints" / "nonfinite.ckpt" if log_dir else None
        self.guard = FaultGuard(stage, cfg.max_nonfinite, checkpoint)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = causal_lm_loss(self(batch), batch["labels"])
        finite = self.guard.check_loss(self, loss, self.global_step)
        self.log(f"{self.stage}/train/skipped_updates", float(self.guard.skipped))
        if not finite:
            return None  # Lightning skips the backward pass and the optimizer step
        self.log(f"{self.stage}/train/loss", loss, prog_bar=True)
        self.log(f"{self.stage}/train/lr", self.optimizers().param_groups[0]["lr"])
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        self.guard.check_grads(self, self.global_step)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        total, count = token_nll(self(batch), batch["labels"])
        self._val_nll.append(torch.stack([total, count.to(total.dtype)]))

    def on_validation_epoch_end(self) -> None:
        total, count = self.trainer.strategy.reduce(torch.stack(self._val_nll).sum(0), reduce_op="sum")
        self._val_nll.clear()
        loss = (total / count.clamp(min=1)).item()
        self.log_dict(
            {f"{self.stage}/val/loss": loss, f"{self.stage}/val/ppl": math.exp(min(loss, 50))},
            sync_dist=False,
            prog_bar=True,
        )
        if self.trainer.is_global_zero and self.sample_prompts and not self.trainer.sanity_checking:
            self._log_samples()
        self._validations += 1

    def _log_samples(self) -> None:
        generator = torch.Generator(device=self.device).manual_seed(0)
        completions = generate_text(
            self.model,
            self.tokenizer,
            self.sample_prompts,
            max_new_tokens=self.cfg.sample_tokens,
            temperature=self.cfg.sample_temperature,
            do_sample=self.cfg.sample_temperature > 0,
            generator=generator,
        )
        rows = [[self.global_step, p, c] for p, c in zip(self.sample_prompts, completions, strict=False)]
        for _, prompt, completion in rows[:3]:
            log.info("%s sample @%d: %s|%s", self.stage, self.global_step, prompt, completion)
        if self.samples_file is not None:
            with open(self.samples_file, "a") as f:
                for step, prompt, completion in rows:
                    f.write(json.dumps({"step": step, "prompt": prompt, "completion": completion}) + "\n")
        for logger in self.loggers:
            if hasattr(logger, "log_table") and self._validations % self.table_every == 0:
                # one key per step: W&B tables logged under one key overwrite each other
                logger.log_table(
                    key=f"{self.stage}/samples/step_{self.global_step:06d}",
                    columns=["step", "prompt", "completion"],
                    data=rows,
                )

    def configure_optimizers(self):
        return build_optimizer(self.model.named_parameters(), self.cfg)


def train_causal_lm(
    ctx,
    out: Path,
    *,
    stage: str,
    start: str | Path,
    source,
    default_source,
    mode: str,
    train: LMTrainConfig,
    peft: PeftConfig,
):
    """Load `start`, train it on `source` (packed documents or prompt/response pairs), export to `out`.

    Returns the final validation metrics, the trained model and its tokenizer.
    """
    cfg, log_dir = ctx.cfg, ctx.log_dir(stage)
    log_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(start, cfg.model)
    model = apply_peft(load_causal_lm(start, cfg.model, tokenizer), peft)
    model.train()  # from_pretrained returns eval mode; dropout stays off either way
    datamodule = LMDataModule(
        source, default_source, tokenizer, cfg.data, train.batch_size, mode, stage_seed(cfg, stage)
    )
    datamodule.setup()
    module = CausalLMModule(
        model,
        tokenizer,
        train,
        stage,
        datamodule.val_prompts,
        log_dir=log_dir,
        table_every=cfg.logger.sample_table_every,
    )
    checkpoints = ctx.checkpoint_dir / CHECKPOINTS if ctx.checkpoint_dir else None
    metrics = fit(cfg, stage, train, module, datamodule, log_dir, checkpoints)
    if not worker_rank():  # under DDP rank 0 exports
        export_model(module.model, tokenizer, out, peft)
    return metrics, module.model, tokenizer
