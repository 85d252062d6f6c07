"""What a loss does with its importance ratios, beyond PPO's clip: the losses of 2025 (CISPO, GMPO, SAPO)
and the corrections for a sampler that is not the learner (truncated and masked importance sampling).

Shapes as in `pg`: log-probs and masks (B, T) over response tokens, advantages (B,) per sequence (or
(B, T) per token where a loss allows), k consecutive rows per prompt. ρ_t = π_θ(y_t)/π_old(y_t), π_old the
learner's weights at the start of the step. Each loss returns (loss, stats), stats detached scalars.

How each loss aggregates its terms (as `pg`'s docstring names them):
    token mean over the batch            cispo_loss
    mean over sequences of token means   sapo_loss
    mean over sequences, one term each   gmpo_loss (the geometric mean of a sequence's token ratios)
"""

from __future__ import annotations

import torch

from rlhf_lab.losses.pg import _per_token, ratio_stats
from rlhf_lab.tensors import masked_mean, masked_sum

Tensor = torch.Tensor


def _log_ratio(logprobs: Tensor, old_logprobs: Tensor, mask: Tensor) -> Tensor:
    """(B, T) log ρ, 0 on masked tokens (so that no padding value can overflow exp)."""
    log_ratio = logprobs - old_logprobs.detach()  # (B, T)
    return torch.where(mask.bool(), log_ratio, torch.zeros_like(log_ratio))  # (B, T)


# ----------------------------------------------------------------------------------------- losses
def cispo_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_low: float = 1.0,
    clip_high: float = 4.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """CISPO (MiniMax-M1, MiniMax 2025, eq. 4): −Σ_i Σ_t sg(clip(ρ_t, 1−ε_low, 1+ε_high))·Â·log π(y_t) /
    Σ_i |y_i|, a token mean over the batch.

    The importance weight is clipped and detached (sg), so every token keeps the gradient Â·∇log π(y_t),
    scaled by its clipped weight: unlike PPO's clip, which zeroes the gradient of a token whose ratio left
    the range, no token is dropped. On-policy (ρ = 1) the gradient is PPO's. ε_low ≥ 1 is no lower bound
    (the paper's choice). advantages (B,) or (B, T). stats: `ratio_stats`, clip_fraction being the share
    of tokens whose weight was clipped (they still carry a gradient).
    """
    ratio = _log_ratio(logprobs, old_logprobs, mask).detach().exp()  # (B, T) ρ, a constant
    weight = ratio.clamp(1.0 - clip_low, 1.0 + clip_high)  # (B, T) sg(clip(ρ))
    terms = weight * _per_token(advantages, logprobs) * logprobs  # (B, T)
    return -masked_mean(terms, mask), ratio_stats(ratio, weight != ratio, mask)


def gmpo_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_low: float = 0.4,
    clip_high: float = 0.4,
) -> tuple[Tensor, dict[str, Tensor]]:
    """GMPO (Zhao et al. 2025, "Geometric-mean policy optimization", eq. 5):
    −(1/G) Σ_i Â_i·exp((1/|y_i|) Σ_t s_i·min(s_i·log ρ_t, s_i·clip(log ρ_t, −ε_low, ε_high))), s_i = sgn(Â_i).

    GRPO's objective with the arithmetic mean of a sequence's token terms replaced by their geometric mean:
    |Â_i|·(Π_t |min(ρ_t Â_i, clip(ρ_t)Â_i)|)^(1/|y_i|)·sgn(Â_i), written in log space. Each token is clipped
    on its own, pessimistically as PPO clips (above for Â > 0, below for Â < 0), in log space: ratios
    within (e^−ε_low, e^ε_high), the paper's ε 0.4 far wider than GRPO's because a geometric mean is
    less moved by one outlying ratio. A mean over sequences, one term each. advantages (B,).
    stats: `ratio_stats` of the token ratios, clip_fraction the share of tokens clipped.
    """
    log_ratio = _log_ratio(logprobs, old_logprobs, mask)  # (B, T)
    adv = advantages.detach()  # (B,)
    sign = adv.sign().unsqueeze(-1)  # (B, 1)
    clipped = log_ratio.clamp(-clip_low, clip_high)  # (B, T)
    pessimistic = sign * torch.minimum(sign * log_ratio, sign * clipped)  # (B, T) PPO's min, in log space
    seq_ratio = torch.exp(masked_mean(pessimistic, mask, dim=-1))  # (B,) 1 for an empty response
    was_clipped = sign * clipped < sign * log_ratio  # (B, T) the clipped branch taken
    return -(adv * seq_ratio).mean(), ratio_stats(log_ratio.exp(), was_clipped, mask)


def sapo_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    tau_pos: float = 1.0,
    tau_neg: float = 1.05,
) -> tuple[Tensor, dict[str, Tensor]]:
    """SAPO (Qwen team 2025, "Soft adaptive policy optimization", arXiv:2511.20347):
    −(1/G) Σ_i (1/|y_i|) Σ_t f(ρ_t)·Â_i with the soft gate f(ρ) = σ(τ(ρ − 1))·4/τ, τ = τ_pos where Â > 0,
    τ_neg otherwise; a mean over sequences of each one's token mean, as GRPO.

    No hard clip: the gradient of a token is f'(ρ)·∇ρ·Â with f'(ρ) = 4σ(1 − σ), 1 at ρ = 1 (on-policy it is
    GRPO's) and decaying smoothly as ρ moves away, faster for larger τ (τ_neg > τ_pos damps negative
    advantages more, the paper's 1.05 against 1.0). advantages (B,) or (B, T). stats: `ratio_stats`, with
    clip_fraction the share of tokens whose gate passes less than half the gradient (f' < 1/2), and
    gate_mean, the mean of f'.
    """
    ratio = _log_ratio(logprobs, old_logprobs, mask).exp()  # (B, T) ρ
    adv = _per_token(advantages, logprobs)  # (B, T)
    tau = torch.where(adv > 0, tau_pos, tau_neg)  # (B, T)
    gate = torch.sigmoid(tau * (ratio - 1.0)) * 4.0 / tau  # (B, T) f(ρ)
    loss = -masked_mean(gate * adv, mask, dim=-1).mean()  # ()
    passed = torch.sigmoid(tau * (ratio.detach() - 1.0))  # (B, T) σ
    slope = 4.0 * passed * (1.0 - passed)  # (B, T) f'(ρ), 1 at ρ = 1
    stats = ratio_stats(ratio, slope < 0.5, mask) | {"gate_mean": masked_mean(slope, mask)}
    return loss, stats


# ------------------------------------------------------------------------------------ corrections
def off_policy_weights(
    old_logprobs: Tensor,
    sampler_logprobs: Tensor,
    mask: Tensor,
    correction: str,
    level: str = "token",
    cap: float = 2.0,
    threshold: float = 2.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Importance weights for rollouts sampled by π_sampler and learned from by π_old (a stale policy, or
    another engine's arithmetic), detached: (B, T) at level "token", (B,) at level "sequence".

    The raw weight is π_old/π_sampler per token, or its product over the sequence. tis (truncated
    importance sampling, Yao et al. 2025, "Your efficient RL framework secretly brings you off-policy RL
    training"): min(w, cap). mis (masked importance sampling, IcePop-style): w where 1/threshold ≤ w ≤
    threshold, 0 outside, so those tokens or sequences are dropped. A weight on the advantage multiplies
    the loss's term (every loss of the algorithm table scales with a non-negative weight on its
    advantage). stats, over response tokens (a sequence's weight counts for each of its tokens):
    weight_mean, weight_max, clipped_share (tis: capped) or masked_share (mis: dropped).
    """
    if correction not in ("tis", "mis") or level not in ("token", "sequence"):
        raise ValueError(f"unknown correction {correction!r} or level {level!r}")
    log_w = torch.where(mask.bool(), old_logprobs - sampler_logprobs, torch.zeros_like(old_logprobs))
    log_w = log_w.detach() if level == "token" else masked_sum(log_w.detach(), mask, dim=-1)  # (B, T) | (B,)
    raw = log_w.exp()  # (B, T) or (B,)
    if correction == "tis":
        weights, changed, name = raw.clamp(max=cap), raw > cap, "clipped_share"
    else:
        inside = (raw >= 1.0 / threshold) & (raw <= threshold)
        weights, changed, name = torch.where(inside, raw, torch.zeros_like(raw)), ~inside, "masked_share"
    per_token = weights if level == "token" else weights.unsqueeze(-1).expand_as(mask)  # (B, T)
    changed = changed if level == "token" else changed.unsqueeze(-1).expand_as(mask)  # (B, T)
    stats = {
        "weight_mean": masked_mean(per_token, mask),
        "weight_max": torch.where(mask.bool(), per_token, torch.zeros_like(per_token)).max(),
        name: masked_mean(changed.to(per_token.dtype), mask),
    }
    return weights, stats


def weigh(advantages: Tensor, weights: Tensor) -> Tensor:
    """Advantages (B,) or (B, T) times weights (B,) or (B, T): (B, T) if either is per token."""
    if advantages.dim() == weights.dim():
        return advantages * weights  # (B,) or (B, T)
    if advantages.dim() == 1:
        return advantages.unsqueeze(-1) * weights  # (B, T)
    return advantages * weights.unsqueeze(-1)  # (B, T)
