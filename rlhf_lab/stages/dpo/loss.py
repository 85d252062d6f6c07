"""DPO's loss of a batch, by `dpo.loss`: the pure functions of `rlhf_lab.losses`, and the implicit rewards."""

from __future__ import annotations

import torch

from rlhf_lab.config import DPOConfig
from rlhf_lab.losses import cdpo_loss, dpo_logratio, dpo_loss, ipo_loss, simpo_loss
from rlhf_lab.stages.dpo.pairs import PairLogps, PairSet


def preference_loss(
    settings: DPOConfig, beta: float, logps: PairLogps, pairs: PairSet
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, implicit reward of each chosen completion (B,), of each rejected one (B,)) of `settings.loss`.

    dpo, cdpo, ipo: the reward is β·log π(y|x)/π_ref(y|x) (Rafailov 2023; for ipo β is τ); simpo: the
    length-normalized β/|y|·log π(y|x), with no reference (Meng 2024). Rewards are detached.
    """
    if settings.loss == "simpo":
        gamma = settings.gamma_ratio * beta
        loss = simpo_loss(*logps, beta=beta, gamma=gamma)
        chosen = beta * logps.chosen / logps.chosen_lengths.clamp(min=1)  # (B,)
        rejected = beta * logps.rejected / logps.rejected_lengths.clamp(min=1)  # (B,)
        return loss, chosen.detach(), rejected.detach()
    device = logps.chosen.device
    ref_chosen, ref_rejected = pairs.ref_chosen.to(device), pairs.ref_rejected.to(device)  # (B,) each
    h = dpo_logratio(logps.chosen, logps.rejected, ref_chosen, ref_rejected)  # (B,)
    if settings.loss == "dpo":
        loss = dpo_loss(h, beta)
    elif settings.loss == "cdpo":
        loss = cdpo_loss(h, beta, settings.epsilon)
    else:
        loss = ipo_loss(h, beta)
    chosen = beta * (logps.chosen - ref_chosen)  # (B,)
    rejected = beta * (logps.rejected - ref_rejected)  # (B,)
    return loss, chosen.detach(), rejected.detach()
