"""AdamW with linear warmup and cosine or linear decay, shared by every training stage."""

from __future__ import annotations

import math

import torch

from rlhf_lab.config import TrainConfig


def lr_multiplier(step: int, warmup: int, total: int, schedule: str, min_ratio: float) -> float:
    """Factor of the peak learning rate at `step`: 0 → 1 over `warmup` steps, then decay to `min_ratio`."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1 - progress
    return min_ratio + (1 - min_ratio) * shape


def build_optimizer(named_params, cfg: TrainConfig):
    """AdamW without weight decay on biases and norms (1-D tensors), and its per-step scheduler."""
    trainable = [(n, p) for n, p in named_params if p.requires_grad]
    groups = [
        {"params": [p for _, p in trainable if p.ndim >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for _, p in trainable if p.ndim < 2], "weight_decay": 0.0},
    ]
    # On CPU the fused kernel takes a third of the time of the default per-tensor loop; elsewhere the
    # default stays (foreach on GPUs), which every strategy supports.
    fused = all(p.device.type == "cpu" for _, p in trainable)
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=fused or None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_multiplier(step, cfg.warmup_steps, cfg.max_steps, cfg.schedule, cfg.min_lr_ratio),
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
