"""What one RL step learns from: the prompts of the step, the reference, and the experience.

prompts     PromptStream: the prompt indices of (step, rank), a pure function of the RL seed (rl.seed)
rollout     rollout.generate (the module samples)
experience  old and reference log-probs, KL-penalized token rewards (Ziegler 2019), and the
            algorithm's advantages (rl.algorithms): `assemble`
passes      `micro_batches` / `in_parts`: every pass over a step's rollouts runs in groups of
            about rl.micro_batch_tokens tokens
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, fields
from typing import NamedTuple

import torch
from torch import nn

from rlhf_lab.config import AlgoConfig
from rlhf_lab.losses import kl_estimate, kl_penalized_rewards
from rlhf_lab.rollout import Rollout, response_logprobs, response_states
from rlhf_lab.seeds import derive_seed
from rlhf_lab.tensors import masked_sum, masked_whiten


class PromptStream:
    """The prompts of each RL step as a pure function of (seed, step, rank): shuffled passes over the
    prompt set, one after another. Resuming needs only the step number."""

    def __init__(self, num_prompts: int, per_step: int, seed: int):
        self.num_prompts, self.per_step, self.seed = num_prompts, per_step, seed

    def batch(self, step: int, rank: int = 0, world_size: int = 1) -> list[int]:
        """Prompt indices of `step` on `rank`: each rank gets its own `per_step` prompts."""
        start = (step * world_size + rank) * self.per_step
        return [self._at(i) for i in range(start, start + self.per_step)]

    def _at(self, i: int) -> int:
        epoch, position = divmod(i, self.num_prompts)
        return self._order(epoch)[position]

    @functools.lru_cache(maxsize=4)  # noqa: B019 (one stream per run)
    def _order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, "prompt_order", epoch))
        return torch.randperm(self.num_prompts, generator=generator).tolist()


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
    token rewards −β·KL_t plus the score at the last token (β only with kl.placement=reward),
    optionally whitened, then `advantages_of(rewards, values, mask)` -> (advantages, returns or None)."""
    mask = rollout.response_mask  # (N, T)
    beta = beta if algo.kl.placement == "reward" else 0.0
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


# ------------------------------------------------------------------------------ reference, critic
class Reference:
    """π_ref: a frozen copy of the starting policy, or the LoRA policy with its adapter disabled.

    Kept out of the LightningModule's state dict: it never changes, so checkpoints need not carry it.
    """

    def __init__(self, policy: nn.Module):
        self.copy = None
        if not hasattr(policy, "disable_adapter"):
            self.copy = copy.deepcopy(policy).eval().requires_grad_(False)

    @torch.no_grad()
    def __call__(self, policy: nn.Module, rollout: Rollout, temperature: float, **kwargs):
        """response_logprobs of π_ref (same options), on the policy's device."""
        if self.copy is None:
            with policy.disable_adapter():
                return response_logprobs(policy, rollout, temperature, **kwargs)
        self.copy.to(next(policy.parameters()).device)
        return response_logprobs(self.copy, rollout, temperature, **kwargs)


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


def micro_batches(lengths: torch.Tensor, budget: int, agree=lambda count: count) -> list[torch.Tensor]:
    """Row indices in groups of about `budget` tokens at most (lengths (N,): tokens of each row), as even
    as the rows allow: ceil(total / budget) groups (`agree` may raise that count, e.g. to the largest
    over DDP ranks), filled longest row first, each into the group with the fewest tokens. budget 0 =
    one group."""
    n = len(lengths)
    count = 1 if budget == 0 else -(-int(lengths.sum()) // budget)
    count = max(1, min(agree(count), n))
    if count == 1:
        return [torch.arange(n, device=lengths.device)]
    groups: list[list[int]] = [[] for _ in range(count)]
    load = [0] * count
    for i in lengths.argsort(descending=True, stable=True).tolist():
        g = load.index(min(load))
        groups[g].append(i)
        load[g] += int(lengths[i])
    return [torch.tensor(sorted(g), device=lengths.device) for g in groups]


def in_parts(rollout: Rollout, fn, budget: int):
    """fn(rollout) computed over micro-batches of about `budget` tokens and reassembled in row order:
    (N, ...) tensors, or a tuple of them (None entries stay None)."""
    parts = micro_batches(rollout.attention_mask.sum(1), budget)
    if len(parts) == 1:
        return fn(rollout)
    outputs = [fn(rollout.select(index)) for index in parts]
    order = torch.cat(parts).argsort()  # (N,) where each row landed

    def join(pieces):
        return None if pieces[0] is None else torch.cat(pieces)[order]

    if isinstance(outputs[0], tuple):
        return tuple(join(list(pieces)) for pieces in zip(*outputs, strict=True))
    return join(outputs)
