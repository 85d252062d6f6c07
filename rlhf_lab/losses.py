"""The maths of rlhf_lab as pure tensor functions; stages call these, nothing is copied between stages."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# the DPO family lives in losses_dpo (both files under 400 lines); re-exported: losses holds every loss
from rlhf_lab.losses_dpo import cdpo_loss, dpo_logratio, dpo_loss, ipo_loss, simpo_loss  # noqa: F401
from rlhf_lab.tensors import IGNORE, last_token_mask


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token negative log-likelihood over labelled tokens, and their count.

    logits (B, L, V) predict position t+1 from position t; labels (B, L) hold IGNORE where a token
    is not trained on (prompt tokens in SFT, padding). Returns (sum, count) so that callers can
    average over a batch, or accumulate across validation batches for an exact perplexity.
    """
    shift_logits = logits[:, :-1].flatten(0, 1).float()  # (B*(L-1), V)
    shift_labels = labels[:, 1:].flatten()  # (B*(L-1),)
    nll = F.cross_entropy(shift_logits, shift_labels, ignore_index=IGNORE, reduction="sum")
    return nll, (shift_labels != IGNORE).sum()


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token NLL over labelled tokens: the pretraining loss, and SFT's response-only loss."""
    total, count = token_nll(logits, labels)
    return total / count.clamp(min=1)


# ----------------------------------------------------------------------------------------------
# Masked reductions. Masks are float or bool (B, T) with 1 on real response tokens; masked entries
# are excluded with torch.where, so inf/nan stored there cannot leak into values or gradients.
# ----------------------------------------------------------------------------------------------


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of x over entries where mask is nonzero, over `dim` (all dims if None)."""
    kept = torch.where(mask.bool(), x, torch.zeros_like(x))  # (B, T)
    return kept.sum() if dim is None else kept.sum(dim)  # () or reduced


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of x over masked entries; an empty selection gives 0 (the count is clamped to 1)."""
    count = masked_sum(torch.ones_like(x), mask, dim)  # () or reduced
    return masked_sum(x, mask, dim) / count.clamp(min=1)  # () or reduced


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of x over all masked entries; unbiased applies Bessel's n/(n−1) correction."""
    centered = x - masked_mean(x, mask)  # (B, T)
    var = masked_mean(centered.square(), mask)  # ()
    if unbiased:
        n = masked_sum(torch.ones_like(x), mask)  # ()
        var = var * n / (n - 1).clamp(min=1)  # ()
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Whiten x with the mean and (unbiased) variance of its masked entries (Huang et al. 2024).

    shift_mean=True: (x − μ)/σ, i.e. mean 0 and variance 1 (used for advantages).
    shift_mean=False: (x − μ)/σ + μ, i.e. the spread is scaled to variance 1 but the mean μ is kept
    (their reward whitening). Masked positions are 0 in the output.
    """
    mean = masked_mean(x, mask)  # ()
    whitened = (x - mean) * torch.rsqrt(masked_var(x, mask) + 1e-8)  # (B, T)
    if not shift_mean:
        whitened = whitened + mean  # (B, T)
    return torch.where(mask.bool(), whitened, torch.zeros_like(whitened))  # (B, T)


# ----------------------------------------------------------------------------------------------
# Reward model
# ----------------------------------------------------------------------------------------------


def bradley_terry_loss(
    diff: torch.Tensor, margin: torch.Tensor | None = None, pairs: torch.Tensor | None = None
) -> torch.Tensor:
    """Bradley–Terry preference loss: mean over pairs of −log σ(r⁺ − r⁻ − margin) (Christiano 2017;
    Stiennon 2020), the one preference loss of rlhf_lab (reward training and validation).

    diff: r⁺ − r⁻ of each pair, any shape; margin: a required gap, same shape or scalar, optional;
    pairs: bool mask of the entries that are pairs (all if None). InstructGPT's K-wise ranking loss
    (Ouyang 2022) is this loss over the (B, K, K) differences r_i − r_j with pairs[b, i, j] when i is
    preferred to j: all pairs of a batch averaged together.
    """
    if margin is not None:
        diff = diff - margin
    nll = -F.logsigmoid(diff)  # same shape as diff
    return nll.mean() if pairs is None else masked_mean(nll, pairs)  # ()


def pairwise_differences(rewards: torch.Tensor) -> torch.Tensor:
    """(B, K, K) r_i − r_j of K rewards per prompt (B, K)."""
    return rewards.unsqueeze(-1) - rewards.unsqueeze(-2)  # (B, K, K)


# ----------------------------------------------------------------------------------------------
# KL
# ----------------------------------------------------------------------------------------------


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token estimate of KL(π‖π_ref) from tokens sampled from π (Schulman 2020, "Approximating KL").

    With log r = log π_ref − log π: k1 = −log r (unbiased, can be negative), k2 = ½(log r)² (biased,
    low variance), k3 = (r − 1) − log r (unbiased, always ≥ 0). Shapes are preserved, e.g. (B, T).
    """
    log_r = ref_logprobs - logprobs  # (B, T)
    if estimator == "k1":
        return -log_r  # (B, T)
    if estimator == "k2":
        return 0.5 * log_r.square()  # (B, T)
    if estimator == "k3":
        return torch.expm1(log_r) - log_r  # (B, T)
    raise ValueError(f"unknown KL estimator {estimator!r}; expected 'k1', 'k2' or 'k3'")


def kl_penalized_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
    estimator: str = "k1",
) -> torch.Tensor:
    """Per-token RLHF reward (Ziegler 2019; Stiennon 2020): −β·kl_t on each response token, plus the
    sequence score (B,) on its last real token; 0 where mask is 0. Detached: rewards are constants."""
    kl = kl_estimate(logprobs.detach(), ref_logprobs.detach(), estimator)  # (B, T)
    rewards = -beta * kl + last_token_mask(mask) * scores.detach().unsqueeze(-1)  # (B, T)
    return torch.where(mask.bool(), rewards, torch.zeros_like(rewards))  # (B, T)


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
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token PPO objective min(ρA, clip(ρ)A), whether the clipped branch was taken, and ρ.

    log ρ is set to 0 on masked tokens, so that no padding value can overflow exp into nan gradients.
    """
    log_ratio = logprobs - old_logprobs.detach()  # (B, T)
    ratio = torch.exp(torch.where(mask.bool(), log_ratio, torch.zeros_like(log_ratio)))  # (B, T)
    unclipped = ratio * advantages  # (B, T)
    clipped = torch.clamp(ratio, 1.0 - clip, 1.0 + clip) * advantages  # (B, T)
    return torch.minimum(unclipped, clipped), clipped < unclipped, ratio  # (B, T) each


def ppo_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip: float = 0.2,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped surrogate loss (Schulman 2017): masked mean of −min(ρA, clip(ρ, 1−ε, 1+ε)A).

    advantages (B, T) per token or (B,) per sequence. stats: clip_fraction (share of masked tokens
    where the clipped branch is strictly smaller, hence taken), approx_kl (masked mean of k2 = ½(log ρ)²,
    as in Huang et al. 2024), ratio_mean (masked mean of ρ).
    """
    surrogate, was_clipped, ratio = _clipped_surrogate(
        logprobs, old_logprobs, _per_token(advantages, logprobs), mask, clip
    )  # (B, T) each
    loss = -masked_mean(surrogate, mask)  # ()
    log_ratio = (logprobs - old_logprobs).detach()  # (B, T)
    stats = {
        "clip_fraction": masked_mean(was_clipped.to(logprobs.dtype), mask).detach(),
        "approx_kl": masked_mean(0.5 * log_ratio.square(), mask),
        "ratio_mean": masked_mean(ratio.detach(), mask),
    }
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
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GRPO loss (Shao 2024): −(1/G) Σ_i (1/|o_i|) Σ_t [min(ρÂ_i, clip(ρ)Â_i) − β·k3_t].

    advantages (B,) per sequence; k3 estimates KL(π‖π_ref) per token with gradient through π.
    stats: clip_fraction (share of masked tokens), kl (mean k3 with the loss's weighting: per-sequence
    token mean, then mean over sequences, so loss(β) − loss(0) = β·kl at equal ρ).
    """
    surrogate, was_clipped, _ = _clipped_surrogate(
        logprobs, old_logprobs, _per_token(advantages, logprobs), mask, clip
    )  # (B, T) each
    kl = kl_loss(logprobs, ref_logprobs, mask)  # ()
    loss = -masked_mean(surrogate, mask, dim=-1).mean() + beta * kl  # ()
    stats = {"clip_fraction": masked_mean(was_clipped.to(logprobs.dtype), mask).detach(), "kl": kl.detach()}
    return loss, stats


def kl_loss(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL to the reference as a loss term (GRPO, Shao 2024): per-sequence token mean of k3, averaged
    over sequences, with gradient through π. Masked tokens contribute exactly 0 (no overflow)."""
    log_r = torch.where(mask.bool(), ref_logprobs.detach() - logprobs, torch.zeros_like(logprobs))  # (B, T)
    k3 = torch.expm1(log_r) - log_r  # (B, T): kl_estimate's k3
    return masked_mean(k3, mask, dim=-1).mean()  # ()


def categorical_kl(logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Exact KL(π‖π_ref) summed over each sequence's masked positions, (B,), from full logits (B, T, V).

    Σ_t Σ_v π(v|s_t)(log π(v|s_t) − log π_ref(v|s_t)) on tokens sampled from π is an unbiased estimate
    of the sequence KL with lower variance than summing k1 (evaluation uses it).
    """
    logp, ref_logp = logits.float().log_softmax(-1), ref_logits.float().log_softmax(-1)  # (B, T, V)
    per_token = (logp.exp() * (logp - ref_logp)).sum(-1)  # (B, T)
    return masked_sum(per_token, mask, dim=-1)  # (B,)


def entropy_from_logprobs(logp: torch.Tensor) -> torch.Tensor:
    """Entropy −Σ p log p from normalized log-probs (..., V) -> (...); 0 where p = 0 (log p = −inf)."""
    finite_logp = logp.clamp(min=torch.finfo(logp.dtype).min)  # (..., V): p = 0 gives 0·min = 0
    return -(logp.exp() * finite_logp).sum(-1)  # (...)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 − Var[R − V] / Var[R] over masked entries: 1 for perfect values, ≤ 0 for useless ones."""
    residual = (returns - values).detach()  # (B, T)
    return 1.0 - masked_var(residual, mask) / masked_var(returns.detach(), mask)  # ()


# ----------------------------------------------------------------------------------------------
# KL coefficient control
# ----------------------------------------------------------------------------------------------


class AdaptiveKLController:
    """Adaptive KL coefficient (Ziegler 2019): e = clip(KL/target − 1, −0.2, 0.2), β ← β(1 + e·n/horizon)."""

    def __init__(self, init_kl_coef: float, target: float, horizon: int) -> None:
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = horizon

    def update(self, kl: float, n_steps: int) -> None:
        error = min(max(float(kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


class FixedKLController:
    """Constant KL coefficient with the AdaptiveKLController interface; update does nothing."""

    def __init__(self, kl_coef: float) -> None:
        self.value = float(kl_coef)

    def update(self, kl: float, n_steps: int) -> None:
        pass

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


# ----------------------------------------------------------------------------------------------
# Best-of-n
# ----------------------------------------------------------------------------------------------


def best_of_n_kl(n: int | torch.Tensor) -> float | torch.Tensor:
    """KL(π_best-of-n ‖ π) = log n − (n − 1)/n (Stiennon 2020); an upper bound, tight for continuous
    rewards without ties (Beirami 2024)."""
    if isinstance(n, torch.Tensor):
        n = n.to(torch.get_default_dtype()) if not n.is_floating_point() else n  # (...)
        return torch.log(n) - (n - 1) / n  # (...)
    return math.log(n) - (n - 1) / n
