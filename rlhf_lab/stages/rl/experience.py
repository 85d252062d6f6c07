"""What one RL step learns from: the experience of its rollouts, the critic's values, and the share of
a micro-batch in its minibatch's loss (the prompt stream, the reference and the micro-batches
themselves are `rlhf_lab.policy`'s, shared with DPO).

experience  old and reference log-probs, KL-penalized token rewards (Ziegler 2019), and the
            algorithm's advantages (stages.rl.algorithms): `assemble`; the sampler's log-probs where it
            is not the learner, and the advantages weighted for it (algo.off_policy): `corrected`
critic      `critic_values`: a reward-model-shaped critic's value at every response position
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import NamedTuple

import torch
from torch import nn

from rlhf_lab.config import AlgoConfig, OffPolicyConfig
from rlhf_lab.losses import kl_estimate, kl_penalized_rewards, off_policy_weights, weigh
from rlhf_lab.rollout import Rollout, response_states
from rlhf_lab.tensors import masked_sum, masked_whiten


@dataclass
class Experience:
    """One step's rollouts and what was computed from them before the update; all constants."""

    rollout: Rollout
    old_logprobs: torch.Tensor  # (N, T) log π_old of the sampled tokens
    ref_logprobs: torch.Tensor  # (N, T) log π_ref
    advantages: torch.Tensor  # (N, T) per token or (N,) per sequence, as the algorithm computes them
    old_values: torch.Tensor | None = None  # (N, T) with a value function
    returns: torch.Tensor | None = None  # (N, T) with a value function: its targets
    keep: torch.Tensor | None = None  # (N,) bool: the rows the loss trains on; None = all
    max_new_tokens: int = 0  # the generation budget, rl.sampling.max_new_tokens (Dr. GRPO's constant)
    sampler_logprobs: torch.Tensor | None = None  # (N, T) log π_sampler, where recorded (rl.staleness > 0
    # or a correction); old_logprobs are then the learner's, at the start of the step

    def select(self, index: torch.Tensor) -> Experience:
        """The rows `index` of every tensor (a minibatch)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        picked = {k: v[index] if torch.is_tensor(v) else v for k, v in values.items()}
        picked["rollout"] = self.rollout.select(index)
        return Experience(**picked)

    @property
    def mask(self) -> torch.Tensor:
        """(N, T) the response tokens the loss trains on: every one of a kept row."""
        mask = self.rollout.response_mask  # (N, T)
        return mask if self.keep is None else mask * self.keep.unsqueeze(1).to(mask.dtype)  # (N, T)


def assemble(
    rollout: Rollout,
    scores: torch.Tensor,
    old_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    values: torch.Tensor | None,
    algo: AlgoConfig,
    advantages_of,
    beta: float,
) -> tuple[Experience, dict[str, float]]:
    """The experience of a step from its scores (N,), log-probs (N, T) and values (N, T) or None:
    token rewards −β·KL_t plus the score at the last token (β: `KLPlacement.in_reward`, 0 when the KL
    is in the loss), optionally whitened, then `advantages_of(rewards, values, mask)` -> (advantages,
    returns or None)."""
    mask = rollout.response_mask  # (N, T)
    rewards = kl_penalized_rewards(scores, old_logprobs, ref_logprobs, mask, beta, algo.kl.estimator)
    if algo.whiten_rewards:
        rewards = masked_whiten(rewards, mask, shift_mean=False)  # (N, T)
    seq_kl = masked_sum(kl_estimate(old_logprobs, ref_logprobs, "k1"), mask, dim=-1)  # (N,)
    stats = {"kl": seq_kl.mean().item(), "return": masked_sum(rewards, mask, dim=-1).mean().item()}
    advantages, returns = advantages_of(rewards, values, mask)  # (N, T) or (N,); (N, T) or None
    if algo.whiten_advantages:
        adv_mask = mask if advantages.dim() == 2 else torch.ones_like(advantages)
        advantages = masked_whiten(advantages, adv_mask)
    return Experience(rollout, old_logprobs, ref_logprobs, advantages, values, returns), stats


def corrected(experience: Experience, settings: OffPolicyConfig) -> tuple[Experience, dict[str, float]]:
    """The experience with its advantages weighted for the sampler–learner mismatch (algo.off_policy:
    `losses.off_policy_weights`, w from π_old/π_sampler), and metrics: off_policy/kl, the mean over
    sequences of Σ_t log π_sampler − log π_old (k1 of KL(π_sampler‖π_old) on the sampler's draws), and the
    weights' (off_policy/weight_mean, weight_max, clipped_share or masked_share). Without a correction the
    advantages are untouched; with the sampler's own log-probs every weight is exactly 1."""
    mask, old = experience.rollout.response_mask, experience.old_logprobs  # (N, T) each
    sampler = experience.sampler_logprobs  # (N, T)
    gap = torch.where(mask.bool(), sampler - old, torch.zeros_like(old))  # (N, T)
    stats = {"off_policy/kl": gap.sum(-1).mean().item()}
    if settings.correction == "none":
        return experience, stats
    weights, weight_stats = off_policy_weights(
        old, sampler, mask, settings.correction, settings.level, settings.cap, settings.threshold
    )  # (N, T) or (N,)
    stats |= {f"off_policy/{k}": v.item() for k, v in weight_stats.items()}
    return dataclasses.replace(experience, advantages=weigh(experience.advantages, weights)), stats


# ---------------------------------------------------------------------------------------- critic
def critic_values(critic: nn.Module, rollout: Rollout) -> torch.Tensor:
    """(N, T) values of a sequence-classification model (the reward model's shape) at every position
    that predicts a response token: its scalar head applied to each hidden state (Stiennon 2020)."""

    def run(input_ids, position_ids, attention_mask, keep):
        out = critic.base_model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
        return (out.last_hidden_state,)  # (R, L, d)

    (hidden,) = response_states(run, rollout.to(next(critic.parameters()).device), critic.base_model)
    return critic.score(hidden).squeeze(-1).float()  # (N, T)


# ---------------------------------------------------------------------------------- micro-batches
class Share(NamedTuple):
    """A micro-batch's fraction of its minibatch's response tokens and of its sequences: the weight of
    a loss term that is a mean over tokens, or over sequences."""

    tokens: torch.Tensor | float
    rows: float

    def of(self, averages_over: str) -> torch.Tensor | float:
        return self.tokens if averages_over == "tokens" else self.rows


WHOLE = Share(1.0, 1.0)  # a minibatch in one piece
