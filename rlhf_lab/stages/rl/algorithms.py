"""The policy-gradient algorithms of the RL stage: one entry each in ALGORITHMS.

An entry says what tells an algorithm apart:

    advantages     from the KL-penalized token rewards (N, T) and the values: per token (N, T) or per
                   sequence (N,), and the value targets when there is a value function
    loss           a pure function of `rlhf_lab.losses` on a micro-batch: (loss, detached stats)
    averages_over  what that loss is a mean over, "tokens" or "sequences": a micro-batch's loss is
                   weighted by its share of them, so the micro-batches add up to the minibatch's loss
    owns_kl        with algo.kl.placement=loss, the loss takes β itself (GRPO's k3 inside its
                   per-sequence mean); otherwise the stage adds β·`losses.kl_loss`, a mean over sequences
                   (`Algorithm.kl_placement` decides, the one place that does)
    value_function / group / on_policy   what it needs: a value function, k ≥ 2 samples per prompt,
                   one update per batch (no importance ratio)
    sequence_ratio one importance ratio per sequence (gspo, gmpo): off-policy corrections
                   (algo.off_policy) then weigh whole sequences only
    keep           which rows the update trains on, from the scores (N,) and k; None = all (DAPO leaves
                   out the groups whose rewards are all equal)

Loss aggregation of each entry (`losses/pg.py`):
    a token mean over the minibatch                 ppo, dapo, reinforce_pp, cispo
    a mean over sequences of each one's token mean  grpo, sapo; gspo and gmpo (the mean log-ratio; then
                                                    one term per sequence)
    a token sum over a constant, mean over sequences  reinforce and rloo (the constant 1), dr_grpo
                                                    (rl.sampling.max_new_tokens)
Every entry with a ratio (all but reinforce and rloo) logs the raw ratios: ratio_mean, ratio_max and
clip_fraction. Adding an algorithm is one entry here, one pure loss in `losses/` (`pg.py`, or
`importance.py` for what a loss does with its ratios) and one `conf/algo/` file.

Every loss here scales with a non-negative weight on its advantage (w·ℓ(ρ, A) = ℓ(ρ, w·A)), so the
off-policy corrections (`experience.corrected`) weigh the advantages and reach every entry alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch

from rlhf_lab.config import AlgoConfig
from rlhf_lab.losses import (
    cispo_loss,
    dapo_loss,
    dr_grpo_advantages,
    dr_grpo_loss,
    explained_variance,
    gae,
    gmpo_loss,
    grpo_advantages,
    grpo_loss,
    gspo_loss,
    ppo_policy_loss,
    reinforce_loss,
    reinforce_pp_advantages,
    rloo_advantages,
    sapo_loss,
    value_loss,
    varied_groups,
)
from rlhf_lab.stages.rl.experience import Experience
from rlhf_lab.tensors import masked_sum

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


class KLPlacement(NamedTuple):
    """Where β·KL(π‖π_ref) enters a step; at most one of the three is non-zero."""

    in_reward: float  # on the token rewards, −β·kl_t (Ziegler 2019; Stiennon 2020)
    in_own_loss: float  # handed to the algorithm's loss, which weighs its k3 term itself (GRPO family)
    added_to_loss: float  # β·`losses.kl_loss`, added by the stage to a loss without a KL term


@dataclass(frozen=True)
class Algorithm:
    advantages: Callable[..., tuple[Tensor, Tensor | None]]  # (rewards, values, mask, algo, baseline)
    loss: Callable[..., tuple[Tensor, Stats]]  # (logprobs, values, batch, algo, beta)
    averages_over: str  # "tokens" | "sequences"
    owns_kl: bool = False
    value_function: bool = False
    group: bool = False
    on_policy: bool = False
    sequence_ratio: bool = False
    keep: Callable[[Tensor, int], Tensor] | None = None  # (scores (N,), k) -> (N,) bool

    def kl_placement(self, placement: str, beta: float) -> KLPlacement:
        """algo.kl.placement=reward: β on the token rewards; =loss: in the algorithm's own loss when it
        owns its KL term, else added by the stage."""
        if placement == "reward":
            return KLPlacement(beta, 0.0, 0.0)
        return KLPlacement(0.0, beta, 0.0) if self.owns_kl else KLPlacement(0.0, 0.0, beta)


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


def _group_centered(rewards, values, mask, algo: AlgoConfig, baseline) -> tuple[Tensor, None]:
    return dr_grpo_advantages(_returns(rewards, mask), algo.samples_per_prompt), None


def _batch_normalized(rewards, values, mask, algo: AlgoConfig, baseline) -> tuple[Tensor, None]:
    return reinforce_pp_advantages(rewards, mask), None  # (N, T) per token


# --------------------------------------------------------------------------------------- losses
def _ppo(logprobs, values, batch: Experience, algo: AlgoConfig, beta: float) -> tuple[Tensor, Stats]:
    mask = batch.mask
    loss, stats = ppo_policy_loss(
        logprobs, batch.old_logprobs, batch.advantages, mask, algo.clip, algo.clip_high
    )
    v_loss, v_stats = value_loss(values, batch.old_values, batch.returns, mask, algo.value.clip)
    stats |= v_stats | {
        "value_loss": v_loss.detach(),
        "explained_variance": explained_variance(values, batch.returns, mask),
    }
    return loss + algo.value.coef * v_loss, stats


def _grpo(logprobs, values, batch: Experience, algo: AlgoConfig, beta: float) -> tuple[Tensor, Stats]:
    loss, stats = grpo_loss(
        logprobs,
        batch.old_logprobs,
        batch.ref_logprobs,
        batch.advantages,
        batch.mask,
        algo.clip,
        beta,
        algo.clip_high,
    )
    stats["kl_loss"] = stats.pop("kl")
    return loss, stats


def _dr_grpo(logprobs, values, batch: Experience, algo: AlgoConfig, beta: float) -> tuple[Tensor, Stats]:
    loss, stats = dr_grpo_loss(
        logprobs,
        batch.old_logprobs,
        batch.ref_logprobs,
        batch.advantages,
        batch.mask,
        constant=batch.max_new_tokens,  # the generation budget
        clip=algo.clip,
        clip_high=algo.clip_high,
        beta=beta,
    )
    stats["kl_loss"] = stats.pop("kl")
    return loss, stats


def _dapo(logprobs, values, batch: Experience, algo: AlgoConfig, beta: float) -> tuple[Tensor, Stats]:
    high = algo.clip if algo.clip_high is None else algo.clip_high
    loss, stats = dapo_loss(
        logprobs, batch.old_logprobs, batch.ref_logprobs, batch.advantages, batch.mask, algo.clip, high, beta
    )
    stats["kl_loss"] = stats.pop("kl")
    return loss, stats


def _gspo(logprobs, values, batch: Experience, algo: AlgoConfig, beta: float) -> tuple[Tensor, Stats]:
    high = algo.clip if algo.clip_high is None else algo.clip_high
    return gspo_loss(logprobs, batch.old_logprobs, batch.advantages, batch.mask, algo.clip, high)


def _clipped(logprobs, values, batch: Experience, algo: AlgoConfig, beta: float) -> tuple[Tensor, Stats]:
    """PPO's clipped surrogate without a value function (REINFORCE++)."""
    return ppo_policy_loss(
        logprobs, batch.old_logprobs, batch.advantages, batch.mask, algo.clip, algo.clip_high
    )


def _reinforce(logprobs, values, batch: Experience, algo: AlgoConfig, beta: float) -> tuple[Tensor, Stats]:
    return reinforce_loss(logprobs, batch.advantages, batch.mask)


def _cispo(logprobs, values, batch: Experience, algo: AlgoConfig, beta: float) -> tuple[Tensor, Stats]:
    high = algo.clip if algo.clip_high is None else algo.clip_high
    return cispo_loss(logprobs, batch.old_logprobs, batch.advantages, batch.mask, algo.clip, high)


def _gmpo(logprobs, values, batch: Experience, algo: AlgoConfig, beta: float) -> tuple[Tensor, Stats]:
    high = algo.clip if algo.clip_high is None else algo.clip_high  # both in log space
    return gmpo_loss(logprobs, batch.old_logprobs, batch.advantages, batch.mask, algo.clip, high)


def _sapo(logprobs, values, batch: Experience, algo: AlgoConfig, beta: float) -> tuple[Tensor, Stats]:
    return sapo_loss(logprobs, batch.old_logprobs, batch.advantages, batch.mask, algo.tau_pos, algo.tau_neg)


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
    # Dr. GRPO (Liu 2025): GRPO without its std and length normalizations: r − mean(group), token sums
    # over a constant
    "dr_grpo": Algorithm(_group_centered, _dr_grpo, "sequences", owns_kl=True, group=True),
    # DAPO (Yu 2025): decoupled clip range (ε_low, ε_high), a token mean over the batch, groups whose
    # rewards are all equal left out
    "dapo": Algorithm(_group_normalized, _dapo, "tokens", owns_kl=True, group=True, keep=varied_groups),
    # GSPO (Zheng 2025): group-normalized advantages, a sequence-level ratio clipped per sequence
    "gspo": Algorithm(_group_normalized, _gspo, "sequences", group=True, sequence_ratio=True),
    # REINFORCE++ (Hu 2025): per-token returns to go normalized over the whole batch, PPO's clipped
    # surrogate, no critic, KL per token in the reward
    "reinforce_pp": Algorithm(_batch_normalized, _clipped, "tokens"),
    # CISPO (MiniMax-M1, 2025): group-normalized advantages, the importance weight clipped and detached
    # on −w·A·log π, so that every token keeps a gradient; a token mean
    "cispo": Algorithm(_group_normalized, _cispo, "tokens", group=True),
    # GMPO (Zhao 2025): the geometric mean of a sequence's token ratios, each clipped in log space
    "gmpo": Algorithm(_group_normalized, _gmpo, "sequences", group=True, sequence_ratio=True),
    # SAPO (Qwen 2025): a smooth, temperature-controlled gate on each token's ratio instead of a clip
    "sapo": Algorithm(_group_normalized, _sapo, "sequences", group=True),
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
    if entry.on_policy and algo.clip_high is not None:
        yield f"algo.clip_high: algo={algo.name} has no importance ratio to clip; use null"
    if entry.on_policy and algo.epochs * algo.minibatches > 1:
        yield (
            f"algo.epochs: algo={algo.name} is an on-policy estimator without an importance ratio, so it "
            "takes one update per batch (epochs=1, minibatches=1); use ppo or grpo for more"
        )
    if rollouts_per_step % k:
        yield "rl.rollouts_per_step: must be a multiple of algo.samples_per_prompt"
    off_policy = algo.off_policy
    if off_policy.correction != "none" and off_policy.level == "token" and entry.sequence_ratio:
        yield (
            f"algo.off_policy.level: algo={algo.name} has one importance ratio per sequence, so its "
            "correction weighs whole sequences: use sequence"
        )
