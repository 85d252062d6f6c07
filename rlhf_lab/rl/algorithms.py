"""The policy-gradient algorithms of the RL stage: one entry each in ALGORITHMS.

An entry says what tells an algorithm apart:

    advantages     from the KL-penalized token rewards (N, T) and the values: per token (N, T) or per
                   sequence (N,), and the value targets when there is a value function
    loss           a pure function of `losses.py` on a micro-batch: (loss, detached stats)
    averages_over  what that loss is a mean over, "tokens" or "sequences": a micro-batch's loss is
                   weighted by its share of them, so the micro-batches add up to the minibatch's loss
    owns_kl        with algo.kl.placement=loss, the loss takes β itself (GRPO's k3 inside its
                   per-sequence mean); otherwise the stage adds β·`losses.kl_loss`, a mean over sequences
    value_function / group / on_policy   what it needs: a value function, k ≥ 2 samples per prompt,
                   one update per batch (no importance ratio)

Loss aggregation of each entry: PPO a token mean over the minibatch; REINFORCE and RLOO a token sum
over the number of sequences; GRPO a mean over sequences of each sequence's token mean.
Adding an algorithm is one entry here, one pure loss in `losses.py` and one `conf/algo/` file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from rlhf_lab.config import AlgoConfig
from rlhf_lab.losses import (
    explained_variance,
    gae,
    grpo_advantages,
    grpo_loss,
    masked_sum,
    ppo_policy_loss,
    reinforce_loss,
    rloo_advantages,
    value_loss,
)
from rlhf_lab.rl.experience import Experience

Tensor = torch.Tensor
Stats = dict[str, Tensor]


class MovingAverage:
    """REINFORCE's baseline: an exponential moving average of past batches' mean return."""

    def __init__(self, decay: float):
        self.decay, self.value = decay, None

    def update(self, mean: float) -> float:
        """The baseline for this batch (the average before it; its own mean for the first batch)."""
        baseline = mean if self.value is None else self.value
        self.value = self.decay * baseline + (1 - self.decay) * mean
        return baseline


@dataclass(frozen=True)
class Algorithm:
    advantages: Callable[..., tuple[Tensor, Tensor | None]]  # (rewards, values, mask, algo, baseline)
    loss: Callable[..., tuple[Tensor, Stats]]  # (logprobs, values, batch, algo, beta)
    averages_over: str  # "tokens" | "sequences"
    owns_kl: bool = False
    value_function: bool = False
    group: bool = False
    on_policy: bool = False


# ---------------------------------------------------------------------------------- advantages
def _gae(rewards, values, mask, algo: AlgoConfig, baseline) -> tuple[Tensor, Tensor]:
    return gae(rewards, values, mask, algo.value.gamma, algo.value.lam)  # (N, T) each


def _returns(rewards, mask) -> Tensor:
    return masked_sum(rewards, mask, dim=-1)  # (N,) the whole completion is one action


def _moving_average(rewards, values, mask, algo: AlgoConfig, baseline: MovingAverage) -> tuple[Tensor, None]:
    returns = _returns(rewards, mask)  # (N,)
    if algo.baseline == "none":
        return returns, None
    return returns - baseline.update(returns.mean().item()), None


def _leave_one_out(rewards, values, mask, algo: AlgoConfig, baseline) -> tuple[Tensor, None]:
    return rloo_advantages(_returns(rewards, mask), algo.samples_per_prompt), None


def _group_normalized(rewards, values, mask, algo: AlgoConfig, baseline) -> tuple[Tensor, None]:
    return grpo_advantages(_returns(rewards, mask), algo.samples_per_prompt), None


# --------------------------------------------------------------------------------------- losses
def _ppo(logprobs, values, batch: Experience, algo: AlgoConfig, beta: float) -> tuple[Tensor, Stats]:
    mask = batch.mask
    loss, stats = ppo_policy_loss(logprobs, batch.old_logprobs, batch.advantages, mask, algo.clip)
    v_loss, v_stats = value_loss(values, batch.old_values, batch.returns, mask, algo.value.clip)
    stats |= v_stats | {
        "value_loss": v_loss.detach(),
        "explained_variance": explained_variance(values, batch.returns, mask),
    }
    return loss + algo.value.coef * v_loss, stats


def _grpo(logprobs, values, batch: Experience, algo: AlgoConfig, beta: float) -> tuple[Tensor, Stats]:
    loss, stats = grpo_loss(
        logprobs, batch.old_logprobs, batch.ref_logprobs, batch.advantages, batch.mask, algo.clip, beta
    )
    stats["kl_loss"] = stats.pop("kl")
    return loss, stats


def _reinforce(logprobs, values, batch: Experience, algo: AlgoConfig, beta: float) -> tuple[Tensor, Stats]:
    return reinforce_loss(logprobs, batch.advantages, batch.mask)


ALGORITHMS: dict[str, Algorithm] = {
    # PPO (Schulman 2017) as in Ziegler 2019 / Huang 2024: GAE on token rewards, clipped surrogate,
    # clipped value loss
    "ppo": Algorithm(_gae, _ppo, "tokens", value_function=True),
    # REINFORCE (Williams 1992) with a moving-average baseline
    "reinforce": Algorithm(_moving_average, _reinforce, "sequences", on_policy=True),
    # RLOO (Ahmadian 2024): the mean return of the other k−1 samples as each one's baseline
    "rloo": Algorithm(_leave_one_out, _reinforce, "sequences", group=True, on_policy=True),
    # GRPO (Shao 2024): group-normalized advantages, clipped ratio per token, k3 KL in the loss
    "grpo": Algorithm(_group_normalized, _grpo, "sequences", owns_kl=True, group=True),
}


def problems(algo: AlgoConfig, rollouts_per_step: int) -> Iterator[str]:
    """'key: message' for each setting the chosen algorithm cannot run with."""
    if algo.name not in ALGORITHMS:
        yield f"algo.name: {algo.name!r} is not one of {', '.join(ALGORITHMS)}"
        return
    entry, k = ALGORITHMS[algo.name], algo.samples_per_prompt
    if entry.group and k < 2:
        yield (
            f"algo.samples_per_prompt: algo={algo.name} compares the samples of a prompt: needs >= 2, got {k}"
        )
    if entry.value_function and algo.value.model == "none":
        yield f"algo.value.model: algo={algo.name} needs a value function (head or critic)"
    if entry.on_policy and algo.epochs * algo.minibatches > 1:
        yield (
            f"algo.epochs: algo={algo.name} is an on-policy estimator without an importance ratio, so it "
            "takes one update per batch (epochs=1, minibatches=1); use ppo or grpo for more"
        )
    if rollouts_per_step % k:
        yield "rl.rollouts_per_step: must be a multiple of algo.samples_per_prompt"
