"""The policy-gradient family as pure tensor functions: advantages, policy and value losses.

Each loss returns (loss, stats), stats being detached scalar tensors; advantages, old and reference
log-probs and returns are constants (detached here). Shapes: log-probs and masks (B, T) over response
tokens, advantages (B, T) per token or (B,) per sequence, k consecutive rows per prompt in a group.

How each loss aggregates its token terms ℓ_{i,t} (Liu 2025 and Yu 2025 show that this matters):
    token mean over the batch         Σ_i Σ_t ℓ / Σ_i |y_i|       ppo_policy_loss, dapo_loss
    mean over sequences of token means (1/B) Σ_i (1/|y_i|) Σ_t ℓ  grpo_loss, gspo_loss (its ratio)
    token sum over a constant         (1/B) Σ_i Σ_t ℓ / C         dr_grpo_loss; reinforce_loss (C = 1)
"""

from __future__ import annotations

import torch

from rlhf_lab.losses.kl import kl_estimate, kl_loss
from rlhf_lab.tensors import masked_mean, masked_sum, masked_var, masked_whiten

# ----------------------------------------------------------------------------------------------
# Advantages
# ----------------------------------------------------------------------------------------------


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation (Schulman 2016): (advantages, returns), each (B, T).

    δ_t = r_t + γV_{t+1} − V_t, A_t = δ_t + γλA_{t+1}, returns = A + V. Values beyond the last real
    token count as 0 (an ended response bootstraps 0); masked positions are 0 in both outputs.
    """
    keep = mask.bool()  # (B, T)
    zeros = torch.zeros_like(values)  # (B, T)
    values = torch.where(keep, values, zeros).detach()  # (B, T)
    rewards = torch.where(keep, rewards, zeros).detach()  # (B, T)
    advantages = torch.zeros_like(values)  # (B, T)
    next_value = next_adv = values.new_zeros(values.shape[0])  # (B,)
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]  # (B,)
        next_adv = torch.where(keep[:, t], delta + gamma * lam * next_adv, 0.0)  # (B,)
        advantages[:, t] = next_adv  # (B,)
        next_value = values[:, t]  # (B,)
    returns = torch.where(keep, advantages + values, zeros)  # (B, T)
    return advantages, returns


def _groups(scores: torch.Tensor, k: int) -> torch.Tensor:
    """View scores (B*K,) as (B, K), K consecutive samples per prompt; checks k ≥ 2 and divisibility."""
    if k < 2:
        raise ValueError(f"group size k must be at least 2, got {k}")
    if scores.numel() % k:
        raise ValueError(f"{scores.numel()} scores cannot be split into groups of k={k}")
    return scores.view(-1, k)  # (B, K)


def rloo_advantages(scores: torch.Tensor, k: int) -> torch.Tensor:
    """REINFORCE leave-one-out advantages (Ahmadian 2024): A_i = R_i − mean_{j≠i} R_j, (B*K,)."""
    groups = _groups(scores, k)  # (B, K)
    baseline = (groups.sum(-1, keepdim=True) - groups) / (k - 1)  # (B, K)
    return (groups - baseline).flatten()  # (B*K,)


def grpo_advantages(scores: torch.Tensor, k: int, eps: float = 1e-4) -> torch.Tensor:
    """GRPO outcome advantages (Shao 2024): (r_i − mean(group)) / (std(group) + eps), (B*K,).

    std is the unbiased sample standard deviation of the group (torch.std's default).
    """
    groups = _groups(scores, k)  # (B, K)
    centered = groups - groups.mean(-1, keepdim=True)  # (B, K)
    return (centered / (groups.std(-1, keepdim=True) + eps)).flatten()  # (B*K,)


def dr_grpo_advantages(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Dr. GRPO advantages (Liu et al. 2025, "Understanding R1-Zero-like training"): r_i − mean(group),
    (B*K,). GRPO's division by the group's std is dropped: it weighs groups whose rewards barely differ
    (too easy or too hard prompts) more than the others."""
    groups = _groups(scores, k)  # (B, K)
    return (groups - groups.mean(-1, keepdim=True)).flatten()  # (B*K,)


def varied_groups(scores: torch.Tensor, k: int) -> torch.Tensor:
    """(B*K,) bool: the rows of groups whose scores are not all equal. DAPO's dynamic sampling (Yu et al.
    2025) drops the others: with equal rewards a group's advantages are all 0, so it only dilutes a
    token-mean loss."""
    groups = _groups(scores, k)  # (B, K)
    varied = (groups != groups[:, :1]).any(-1)  # (B,)
    return varied.repeat_interleave(k)  # (B*K,)


def reinforce_pp_advantages(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """REINFORCE++ advantages (Hu 2025), (B, T): each token's return to go Σ_{s≥t} r_s (γ = 1; r is the
    KL-penalized token reward, the score at the last token), then whitened over every response token of
    the batch, not within a prompt's group. No critic. 0 where mask is 0."""
    keep = mask.bool()  # (B, T)
    rewards = torch.where(keep, rewards, torch.zeros_like(rewards)).detach()  # (B, T)
    to_go = rewards.flip(-1).cumsum(-1).flip(-1)  # (B, T) Σ_{s≥t} r_s
    return masked_whiten(to_go, mask)  # (B, T)


# ----------------------------------------------------------------------------------------------
# Policy and value losses: each returns (loss, stats), stats being detached scalar tensors.
# Advantages, old/reference log-probs and returns are constants: they are detached here.
# ----------------------------------------------------------------------------------------------


def _per_token(advantages: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Broadcast per-sequence advantages (B,) to tokens (B, T); (B, T) advantages pass through."""
    adv = advantages.detach()  # (B,) or (B, T)
    return adv.unsqueeze(-1).expand_as(like) if adv.dim() == 1 else adv  # (B, T)


def _clipped_surrogate(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip: float,
    clip_high: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token PPO objective min(ρA, clip(ρ, 1−ε, 1+ε_high)A), whether the clipped branch was taken,
    and ρ. ε_high = ε unless given (DAPO's clip-higher).

    log ρ is set to 0 on masked tokens, so that no padding value can overflow exp into nan gradients.
    """
    log_ratio = logprobs - old_logprobs.detach()  # (B, T)
    ratio = torch.exp(torch.where(mask.bool(), log_ratio, torch.zeros_like(log_ratio)))  # (B, T)
    return _clip_branch(ratio, advantages, clip, clip if clip_high is None else clip_high)


def _clip_branch(
    ratio: torch.Tensor, advantages: torch.Tensor, low: float, high: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """min(ρA, clip(ρ, 1−low, 1+high)A), whether the clipped branch was taken, and ρ; any shape."""
    unclipped = ratio * advantages  # (B, T) or (B,)
    clipped = torch.clamp(ratio, 1.0 - low, 1.0 + high) * advantages  # (B, T) or (B,)
    return torch.minimum(unclipped, clipped), clipped < unclipped, ratio


def ratio_stats(
    ratio: torch.Tensor, was_clipped: torch.Tensor, mask: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The raw importance ratios ρ = π_θ/π_old where mask is nonzero (tokens (B, T), or sequences (B,)):
    ratio_mean, ratio_max, and clip_fraction (the share where the clipped branch was taken, so that the
    term carries no gradient)."""
    ratio = ratio.detach()
    return {
        "clip_fraction": masked_mean(was_clipped.to(ratio.dtype), mask),
        "ratio_mean": masked_mean(ratio, mask),
        "ratio_max": torch.where(mask.bool(), ratio, torch.zeros_like(ratio)).max(),
    }


def ppo_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip: float = 0.2,
    clip_high: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped surrogate loss (Schulman 2017): −Σ_i Σ_t min(ρA, clip(ρ, 1−ε, 1+ε)A) / Σ_i |y_i|, a
    token mean over the batch. Also REINFORCE++'s loss (Hu 2025), with its advantages.

    advantages (B, T) per token or (B,) per sequence; clip_high: a different upper range. stats:
    `ratio_stats`, approx_kl (masked mean of k2 = ½(log ρ)², as in Huang et al. 2024).
    """
    surrogate, was_clipped, ratio = _clipped_surrogate(
        logprobs, old_logprobs, _per_token(advantages, logprobs), mask, clip, clip_high
    )  # (B, T) each
    loss = -masked_mean(surrogate, mask)  # ()
    log_ratio = (logprobs - old_logprobs).detach()  # (B, T)
    stats = ratio_stats(ratio, was_clipped, mask) | {"approx_kl": masked_mean(0.5 * log_ratio.square(), mask)}
    return loss, stats


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip: float | None = 0.2,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss ½·max((V − R)², (clip(V, V_old ± ε) − R)²), masked mean (Huang et al. 2024).

    clip=None gives the unclipped ½(V − R)². stats: value_clip_fraction (share of masked tokens where
    the clipped term is strictly larger, hence taken).
    """
    returns = returns.detach()  # (B, T)
    error = (values - returns).square()  # (B, T)
    if clip is None:
        return 0.5 * masked_mean(error, mask), {"value_clip_fraction": values.new_zeros(())}  # ()
    old_values = old_values.detach()  # (B, T)
    clipped_values = old_values + torch.clamp(values - old_values, -clip, clip)  # (B, T)
    clipped_error = (clipped_values - returns).square()  # (B, T)
    loss = 0.5 * masked_mean(torch.maximum(error, clipped_error), mask)  # ()
    fraction = masked_mean((clipped_error > error).to(values.dtype), mask).detach()  # ()
    return loss, {"value_clip_fraction": fraction}


def reinforce_loss(
    logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """REINFORCE (Williams 1992): −(1/B) Σ_i Σ_t A_{i,t} log π(y_{i,t}) over masked tokens.

    With per-sequence advantages (B,) this is −mean_i A_i·log π(y_i); with per-token (B, T) ones each
    token has its own weight. stats: seq_logprob (mean summed log-probability of a sequence).
    """
    weighted = _per_token(advantages, logprobs) * logprobs  # (B, T)
    loss = -masked_sum(weighted, mask) / logprobs.shape[0]  # ()
    seq_logprob = masked_sum(logprobs.detach(), mask, dim=-1).mean()  # ()
    return loss, {"seq_logprob": seq_logprob}


def grpo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip: float = 0.2,
    beta: float = 0.04,
    clip_high: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GRPO loss (Shao 2024): −(1/G) Σ_i (1/|o_i|) Σ_t [min(ρÂ_i, clip(ρ)Â_i) − β·k3_t], a mean over
    sequences of each sequence's token mean.

    advantages (B,) per sequence; k3 estimates KL(π‖π_ref) per token with gradient through π, but its
    gradient is that of KL(π_ref‖π) (`kl.kl_loss`; Tang & Munos 2025): the optimum is not π*.
    stats: `ratio_stats`, kl (mean k3 with the loss's weighting: per-sequence token mean, then mean over
    sequences, so loss(β) − loss(0) = β·kl at equal ρ).
    """
    surrogate, was_clipped, ratio = _clipped_surrogate(
        logprobs, old_logprobs, _per_token(advantages, logprobs), mask, clip, clip_high
    )  # (B, T) each
    kl = kl_loss(logprobs, ref_logprobs, mask)  # ()
    loss = -masked_mean(surrogate, mask, dim=-1).mean() + beta * kl  # ()
    return loss, ratio_stats(ratio, was_clipped, mask) | {"kl": kl.detach()}


def dr_grpo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    constant: float,
    clip: float = 0.2,
    clip_high: float | None = None,
    beta: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Dr. GRPO loss (Liu et al. 2025): −(1/G) Σ_i (1/C) Σ_t [min(ρÂ_i, clip(ρ)Â_i) − β·k3_t], a token sum
    over a constant C (the generation budget, rl.sampling.max_new_tokens), then a mean over sequences.

    GRPO's 1/|o_i| gives each token of a short response more weight than one of a long response: among
    correct answers it favors short ones, among wrong ones it penalizes long ones less (so wrong answers
    grow). With a constant every token weighs the same. advantages (B,) (`dr_grpo_advantages`).
    stats: `ratio_stats`, kl (Σ_t k3 / C averaged over sequences: loss(β) − loss(0) = β·kl at equal ρ).
    """
    if constant <= 0:
        raise ValueError(f"Dr. GRPO divides by a positive constant (the generation budget), got {constant}")
    surrogate, was_clipped, ratio = _clipped_surrogate(
        logprobs, old_logprobs, _per_token(advantages, logprobs), mask, clip, clip_high
    )  # (B, T) each
    loss = -(masked_sum(surrogate, mask, dim=-1) / constant).mean()  # ()
    k3 = kl_estimate(logprobs, ref_logprobs.detach(), "k3", mask)  # (B, T)
    kl = (masked_sum(k3, mask, dim=-1) / constant).mean()  # ()
    if beta:
        loss = loss + beta * kl
    return loss, ratio_stats(ratio, was_clipped, mask) | {"kl": kl.detach()}


def dapo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    beta: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DAPO loss (Yu et al. 2025): −Σ_i Σ_t [min(ρÂ_i, clip(ρ, 1−ε_low, 1+ε_high)Â_i) − β·k3_t] / Σ_i |o_i|,
    a token mean over the batch ("token-level policy gradient loss").

    Clip-higher: ε_high > ε_low lets the ratio of a token with a positive advantage grow further, so that
    unlikely tokens can gain probability (against entropy collapse). The token mean weighs every token
    the same, so long responses count in proportion to their length. DAPO has no KL term (β = 0); with
    β > 0 the k3 term is a token mean too. advantages (B,) GRPO's; the rows of groups whose rewards are
    all equal are left out by the caller (mask 0: `varied_groups`). stats: `ratio_stats`, kl (token
    mean of k3).
    """
    surrogate, was_clipped, ratio = _clipped_surrogate(
        logprobs, old_logprobs, _per_token(advantages, logprobs), mask, clip_low, clip_high
    )  # (B, T) each
    loss = -masked_mean(surrogate, mask)  # ()
    kl = masked_mean(kl_estimate(logprobs, ref_logprobs.detach(), "k3", mask), mask)  # ()
    if beta:
        loss = loss + beta * kl
    return loss, ratio_stats(ratio, was_clipped, mask) | {"kl": kl.detach()}


def gspo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float = 3e-4,
    clip_high: float = 4e-4,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GSPO loss (Zheng et al. 2025): −(1/G) Σ_i min(s_iÂ_i, clip(s_i, 1−ε_low, 1+ε_high)Â_i) with the
    sequence-level importance ratio s_i = (π_θ(y_i|x)/π_old(y_i|x))^(1/|y_i|) = exp(mean_t log ρ_{i,t}).

    A mean over sequences: each sequence is clipped as a whole (its tokens' ratios are not clipped one
    by one), and the gradient of s_i is s_i·(1/|y_i|)·Σ_t ∇log π(y_t), a mean over the sequence's tokens,
    hence the small clip ranges. advantages (B,) group-normalized. stats: `ratio_stats` of the sequence
    ratios s_i over the sequences with at least one token.
    """
    keep = mask.bool()  # (B, T)
    log_ratio = torch.where(keep, logprobs - old_logprobs.detach(), torch.zeros_like(logprobs))  # (B, T)
    seq_ratio = torch.exp(masked_mean(log_ratio, mask, dim=-1))  # (B,) s_i; 1 for an empty response
    surrogate, was_clipped, _ = _clip_branch(seq_ratio, advantages.detach(), clip_low, clip_high)  # (B,) each
    return -surrogate.mean(), ratio_stats(seq_ratio, was_clipped, keep.any(-1))


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 − Var[R − V] / Var[R] over masked entries: 1 for perfect values, ≤ 0 for useless ones."""
    residual = (returns - values).detach()  # (B, T)
    return 1.0 - masked_var(residual, mask) / masked_var(returns.detach(), mask)  # ()
