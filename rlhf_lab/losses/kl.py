"""KL to the reference, every estimator of it and nothing else: the per-token estimators, the
KL-penalized reward, the KL as a loss term, the exact KL of evaluation, the coefficient's controllers,
and best-of-n's KL. Where the KL enters an RL step (reward or loss) is decided once per algorithm, by
`stages.rl.algorithms.Algorithm.kl_placement`."""

from __future__ import annotations

import math

import torch

from rlhf_lab.tensors import last_token_mask, masked_mean, masked_sum


def kl_estimate(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-token estimate of KL(π‖π_ref) from tokens sampled from π (Schulman 2020, "Approximating KL").

    With log r = log π_ref − log π: k1 = −log r (unbiased, can be negative), k2 = ½(log r)² (biased,
    low variance), k3 = (r − 1) − log r (unbiased, always ≥ 0). Shapes are preserved, e.g. (B, T).
    With a `mask`, log r is 0 on its masked tokens, so each estimator is exactly 0 there (k3's exp
    never overflows on a padded position's arbitrary log-probs).
    """
    log_r = ref_logprobs - logprobs  # (B, T)
    if mask is not None:
        log_r = torch.where(mask.bool(), log_r, torch.zeros_like(log_r))  # (B, T)
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


def kl_loss(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL to the reference as a loss term (GRPO, Shao 2024): per-sequence token mean of k3, averaged
    over sequences, with gradient through π. Masked tokens contribute exactly 0 (no overflow).
    On π's own samples the gradient of k3 is that of KL(π_ref‖π) at the visited prefixes, not of
    KL(π‖π_ref) (Tang & Munos 2025), so a loss with this term does not converge to the KL-regularized
    optimum π* ∝ π_ref·exp(r/β): experiments/exact_optimum measures the gap."""
    k3 = kl_estimate(logprobs, ref_logprobs.detach(), "k3", mask)  # (B, T)
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
