"""The DPO family of preference losses as pure tensor functions: DPO, conservative DPO, IPO and SimPO.

Inputs are per-pair sequence log-probabilities (B,): the sum of a completion's token log-probs (EOS
included) given its prompt, under the policy and, except for SimPO, under the reference. Reference
log-probs are constants (detached here). Each loss is the mean over the B pairs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dpo_logratio(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
) -> torch.Tensor:
    """h = log π(y⁺|x)/π_ref(y⁺|x) − log π(y⁻|x)/π_ref(y⁻|x), (B,) (Rafailov et al. 2023, "Direct
    preference optimization"); β·log π(y|x)/π_ref(y|x) is each completion's implicit reward."""
    chosen = chosen_logps - ref_chosen_logps.detach()  # (B,)
    rejected = rejected_logps - ref_rejected_logps.detach()  # (B,)
    return chosen - rejected  # (B,)


def dpo_loss(logratio: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO (Rafailov et al. 2023): mean of −log σ(β·h) over pairs, h from `dpo_logratio` (B,)."""
    return -F.logsigmoid(beta * logratio).mean()  # ()


def cdpo_loss(logratio: torch.Tensor, beta: float, epsilon: float) -> torch.Tensor:
    """Conservative DPO (Mitchell 2023, "A note on DPO with noisy preferences"): each label is taken to
    be flipped with probability ε, so the loss is the expected DPO loss under that noise,
    mean of −(1−ε)·log σ(β·h) − ε·log σ(−β·h). ε = 0 is DPO; unlike DPO its minimum is at a finite h,
    β·h = log((1−ε)/ε)."""
    return (-(1 - epsilon) * F.logsigmoid(beta * logratio) - epsilon * F.logsigmoid(-beta * logratio)).mean()


def ipo_loss(logratio: torch.Tensor, tau: float) -> torch.Tensor:
    """IPO (Azar et al. 2023, "A general theoretical paradigm to understand learning from human
    preferences"): mean of (h − 1/(2τ))², a squared loss that pulls h to 1/(2τ) instead of pushing it to
    infinity on preferences that are always the same way; h from `dpo_logratio` on summed log-probs."""
    return (logratio - 1 / (2 * tau)).square().mean()  # ()


def simpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    beta: float,
    gamma: float,
) -> torch.Tensor:
    """SimPO (Meng, Xia & Chen 2024, "Simple preference optimization with a reference-free reward"):
    mean of −log σ((β/|y⁺|)·log π(y⁺|x) − (β/|y⁻|)·log π(y⁻|x) − γ). No reference model: the implicit
    reward is the length-normalized log-likelihood β/|y|·log π(y|x), and γ a target margin (the paper:
    β ≈ 2–2.5, γ/β ≈ 0.5). Lengths (B,) are completion tokens, EOS included."""
    chosen = beta * chosen_logps / chosen_lengths.clamp(min=1)  # (B,)
    rejected = beta * rejected_logps / rejected_lengths.clamp(min=1)  # (B,)
    return -F.logsigmoid(chosen - rejected - gamma).mean()  # ()
