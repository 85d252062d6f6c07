"""Stage `rl`: the policy against a reward with a KL penalty to the reference (PPO, REINFORCE, RLOO, GRPO).

One RL step reads top to bottom in `RLModule.training_step`:

    rollout   K samples per prompt with the shared KV-cached generation        (rollout.generate)
    score     the `reward` scorer (a reward model, gold, ...) and the gold one  (scorers)
    KL        per-token log π/π_ref against the reference                       (losses.kl_estimate)
    advantage GAE on KL-penalized token rewards (ppo), or whole-sequence returns
              minus a baseline: moving average (reinforce), leave-one-out (rloo),
              group-normalized (grpo)                                           (losses)
    update    epochs × minibatches of the algorithm's loss, AdamW, clipping
    metrics   rl/train/* every step; rl/eval/* on held-out prompts every rl.eval_every steps

The reference is a frozen copy of the starting policy, or, for a LoRA policy, the same model with its
adapter disabled (no second copy). The prompt stream is a function of (seed, step), so a checkpoint
holds everything needed to resume exactly: weights, optimizer, scheduler, β, baseline, RNG states and
the step. Checkpoints live in the artifact's scratch folder: running the same command again after a
crash resumes from the last one.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import logging
import math
import random
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import NamedTuple

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import RichProgressBar
from torch import nn

from rlhf_lab.config import Config
from rlhf_lab.evaluation import sample_with_kl, summarize
from rlhf_lab.faults import FaultGuard
from rlhf_lab.losses import (
    AdaptiveKLController,
    FixedKLController,
    explained_variance,
    gae,
    grpo_advantages,
    grpo_loss,
    kl_estimate,
    kl_loss,
    kl_penalized_rewards,
    masked_mean,
    masked_sum,
    masked_whiten,
    ppo_policy_loss,
    reinforce_loss,
    rloo_advantages,
    value_loss,
)
from rlhf_lab.models import apply_peft, export_model, load_causal_lm, load_reward_model, load_tokenizer
from rlhf_lab.optim import build_optimizer
from rlhf_lab.rollout import (
    ResponseStats,
    Rollout,
    decode_responses,
    generate,
    left_pad,
    response_logprobs,
    response_states,
)
from rlhf_lab.scorers import GoldScorer, make_scorer
from rlhf_lab.stages.common import CHECKPOINTS, Context, check_ranks_agree, data_key, model_key, trainer_key
from rlhf_lab.tracking import make_loggers, memory_mb

log = logging.getLogger(__name__)
RESUMABLE = True  # checkpoints in the scratch folder survive a crash
DISTRIBUTED = True  # trains with a Lightning Trainer: under DDP every rank takes part
CHECKPOINT = Path(CHECKPOINTS) / "last.ckpt"
TABLE_ROWS = 16  # rollouts per W&B sample table
NOT_IN_KEY = ("samples_every", "checkpoint_every", "micro_batch_tokens")  # rl settings that do not change
# the artifact (micro-batches change only the order of float sums)


def upstream(cfg: Config) -> list[str]:
    needs = [] if cfg.rl.policy else ["sft"]
    if cfg.reward.kind == "rm" and cfg.reward.path is None:
        needs.append("reward")
    return needs


def key_config(cfg: Config) -> dict:
    return {
        "policy": cfg.rl.policy,
        "model": model_key(cfg),
        "algo": dataclasses.asdict(cfg.algo),
        "rl": {k: v for k, v in dataclasses.asdict(cfg.rl).items() if k not in NOT_IN_KEY},
        "reward": dataclasses.asdict(cfg.reward),
        "gold": cfg.gold,
        "peft": dataclasses.asdict(cfg.peft),
        "prompts": data_key(cfg, "prompts"),
        "eval_prompts": data_key(cfg, "eval_prompts"),
        "seed": cfg.seed,
        "trainer": trainer_key(cfg),
    }


# ------------------------------------------------------------------------------------------ data
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
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_prompts, generator=generator).tolist()


class _Steps(torch.utils.data.IterableDataset):
    """What Lightning iterates: the numbers of the steps still to run (read after a checkpoint restore)."""

    def __init__(self, module: RLModule, max_steps: int):
        self.module, self.max_steps = module, max_steps

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.module.step_count, self.max_steps))

    def __len__(self) -> int:
        return self.max_steps


# ------------------------------------------------------------------------------------ experience
@dataclass
class Experience:
    """One step's rollouts and what was computed from them before the update; all constants."""

    rollout: Rollout
    old_logprobs: torch.Tensor  # (N, T) log π_old of the sampled tokens
    ref_logprobs: torch.Tensor  # (N, T) log π_ref
    advantages: torch.Tensor  # (N, T) per token (ppo) or (N,) per sequence
    old_values: torch.Tensor | None = None  # (N, T) ppo
    returns: torch.Tensor | None = None  # (N, T) ppo: the value targets

    def select(self, index: torch.Tensor) -> Experience:
        """The rows `index` of every tensor (a minibatch)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        picked = {k: v[index] if torch.is_tensor(v) else v for k, v in values.items()}
        picked["rollout"] = self.rollout.select(index)
        return Experience(**picked)

    @property
    def mask(self) -> torch.Tensor:
        return self.rollout.response_mask  # (N, T)


class Share(NamedTuple):
    """A micro-batch's fraction of its minibatch's response tokens and of its sequences."""

    tokens: torch.Tensor | float
    rows: float


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


# ---------------------------------------------------------------------------------------- module
class RLModule(L.LightningModule):
    """Policy (and value) training against a scorer, manual optimization, one RL step per batch."""

    def __init__(
        self,
        policy: nn.Module,
        tokenizer,
        cfg: Config,
        prompts: list[str],
        eval_prompts: list[str],
        reward_path: Path | None,
        critic: nn.Module | None = None,
        out_dir: Path | None = None,
        checkpoint: Path | None = None,
    ):
        super().__init__()
        self.automatic_optimization = False
        self.policy, self.tokenizer, self.critic = policy, tokenizer, critic
        self.cfg, self.algo, self.settings = cfg, cfg.algo, cfg.rl
        self.value_head = None
        if self.algo.value.model == "head":
            hidden = policy.config.hidden_size
            self.value_head = nn.Linear(hidden, 1)
            nn.init.normal_(self.value_head.weight, std=1 / math.sqrt(hidden + 1))
            nn.init.zeros_(self.value_head.bias)
        self.reference = Reference(policy)
        self.reward_path, self.out_dir, self.checkpoint = reward_path, out_dir, checkpoint
        self.prompts, self.eval_prompts = prompts, eval_prompts
        self.prompt_ids = [self._prompt_tokens(p) for p in prompts]
        self.eval_prompt_ids = [self._prompt_tokens(p) for p in eval_prompts]
        self.stream = PromptStream(len(prompts), self.settings.rollouts_per_step // self.algo.k, cfg.seed)
        kl = self.algo.kl
        self.kl_ctl = (
            AdaptiveKLController(kl.beta, kl.target, kl.horizon)
            if kl.adaptive
            else FixedKLController(kl.beta)
        )
        sampling = self.settings.sampling
        self.temperature = sampling.temperature if self.algo.scale_logprobs else 1.0  # of every log-prob
        self.stop_token_id = self._stop_token_id(self.algo.stop_token)
        self.step_count = 0  # RL steps done: the position in the prompt stream
        self.baseline: float | None = None  # reinforce's moving average of returns
        self.sft_gold: torch.Tensor | None = None  # gold of the starting policy on eval prompts (win rate)
        self.last_train: dict[str, float] = {}
        self.last_eval: dict[str, float] = {}
        self._restored_rng: dict | None = None
        self.guard = FaultGuard("rl", self.settings.max_nonfinite, checkpoint)

    # ------------------------------------------------------------------------------- setup
    def _prompt_tokens(self, prompt: str) -> list[int]:
        ids = self.tokenizer(prompt)["input_ids"]
        return ids[-self.cfg.data.max_prompt_length :]  # keep the end: it is what the model continues

    def _stop_token_id(self, text: str | None) -> int | None:
        if text is None:
            return None
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(
                f"algo.stop_token={text!r} is {len(ids)} tokens for this tokenizer; it must be 1"
            )
        return ids[0]

    def configure_optimizers(self):
        params = [("policy." + n, p) for n, p in self.policy.named_parameters()]
        for name, part in (("value_head", self.value_head), ("critic", self.critic)):
            if part is not None:
                params += [(f"{name}.{n}", p) for n, p in part.named_parameters()]
        return build_optimizer(params, self.settings)

    def on_fit_start(self) -> None:
        self.scorer = make_scorer(self.cfg.reward, self.reward_path, device=str(self.device))
        self.gold = GoldScorer() if self.cfg.gold else None
        self.generator = torch.Generator(device=self.device).manual_seed(self.cfg.seed + self.global_rank)

    def on_train_start(self) -> None:
        for part in (self.policy, self.critic):  # train mode is harmless: dropout is already off
            if part is not None:
                part.train()
        self.memory_at_start = memory_mb(self.device)[0]  # models loaded, nothing run yet
        if self.step_count == 0 and self.sft_gold is None:
            self._evaluate()  # the starting (SFT) policy: the baseline of the gains and the win rate

    # --------------------------------------------------------------------------- the RL step
    def training_step(self, step: int, batch_idx: int) -> None:
        if self._restored_rng is not None:  # here, after Lightning's own setup has drawn its seeds
            _set_rng_state(self._restored_rng, self.generator)
            self._restored_rng = None
        timer = _Timer(self.device)
        with timer("generation"):
            index = self.stream.batch(self.step_count, self.global_rank, self.trainer.world_size)
            rollout = self.rollout([self.prompt_ids[i] for i in index])  # N = prompts × k rows
        with timer("scoring"):
            prompts = [self.prompts[i] for i in index for _ in range(self.algo.k)]  # (N,)
            completions = decode_responses(self.tokenizer, rollout)
            scores, gold = self.score(prompts, completions)  # (N,) each; gold may be None
            ended = self.ended(rollout)  # (N,)
            shaped = self.shape(scores, ended)  # (N,)
        with timer("update"):
            experience, stats = self.experience(rollout, shaped)
            stats |= self.update(experience)
        self.step_count += 1

        n_tokens = rollout.lengths().sum().item()
        stats |= {
            "reward": scores.mean().item(),
            "length": rollout.lengths().float().mean().item(),
            "eos_fraction": ended.float().mean().item(),
            "lr": self.optimizers().param_groups[0]["lr"],
            **{f"time/{k}": v for k, v in timer.seconds.items()},
            "time/step": sum(timer.seconds.values()),
            "tokens_per_second": n_tokens / max(sum(timer.seconds.values()), 1e-9),
            "memory/peak_mb": memory_mb(self.device)[1],
            "memory/at_start_mb": self.memory_at_start,
        }
        if gold is not None:
            stats["gold"] = gold.mean().item()
        stats = self._mean_over_ranks(stats)
        self.kl_ctl.update(stats["kl"], len(rollout) * self.trainer.world_size)
        stats["beta"] = self.kl_ctl.value
        self.last_train = {f"rl/train/{k}": v for k, v in stats.items()}
        self._log(self.last_train)
        shown = ("reward", "kl", "gold") if gold is not None else ("reward", "kl")
        self.log_dict({k: stats[k] for k in shown}, prog_bar=True, logger=False)
        if self.step_count % self.settings.samples_every == 0:
            self._log_samples(prompts, completions, scores, gold)
        if self.step_count % self.settings.eval_every == 0 or self.step_count == self.settings.max_steps:
            self._evaluate()

    def _mean_over_ranks(self, stats: dict[str, float]) -> dict[str, float]:
        """Each metric averaged over the ranks (each drew its own rollouts), in one all-reduce; the
        adaptive β then follows the same KL on every rank."""
        if self.trainer.world_size < 2:
            return stats
        keys = sorted(stats)
        values = torch.tensor([stats[k] for k in keys], dtype=torch.float64, device=self.device)
        values = self.trainer.strategy.reduce(values, reduce_op="mean")
        return dict(zip(keys, values.tolist(), strict=True))

    def rollout(self, prompt_ids: list[list[int]]) -> Rollout:
        """algo.k samples of each prompt (rows i*k .. i*k+k−1), cut at the stop token if one is set."""
        repeated = [p for p in prompt_ids for _ in range(self.algo.k)]
        ids, mask = left_pad(repeated, self.tokenizer.pad_token_id)  # (N, P)
        return self._generate(ids, mask, self.generator)

    def _generate(self, ids: torch.Tensor, mask: torch.Tensor, generator: torch.Generator) -> Rollout:
        pad, s = self.tokenizer.pad_token_id, self.settings.sampling
        rollout = generate(
            self.policy,
            ids,
            mask,
            max_new_tokens=s.max_new_tokens,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=pad,
            temperature=s.temperature,
            top_k=s.top_k,
            top_p=s.top_p,
            generator=generator,
        )
        return rollout if self.stop_token_id is None else rollout.truncate_after(self.stop_token_id, pad)

    def ended(self, rollout: Rollout) -> torch.Tensor:
        """(N,) bool: the response ended by itself (EOS or the stop token), not cut at max_new_tokens."""
        ended = rollout.ends_with_eos  # (N,)
        if self.stop_token_id is not None:
            last = (rollout.lengths() - 1).clamp(min=0).unsqueeze(1)  # (N, 1)
            ended = ended | (rollout.response_ids.gather(1, last).squeeze(1) == self.stop_token_id)
        return ended

    def score(self, prompts: list[str], completions: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(proxy scores (N,), gold scores (N,) or None), on the module's device."""
        scores = self.scorer.score(prompts, completions).to(self.device)  # (N,)
        if self.gold is None:
            return scores, None
        same = isinstance(self.scorer, GoldScorer)
        gold = scores if same else self.gold.score(prompts, completions).to(self.device)  # (N,)
        return scores, gold

    def shape(self, scores: torch.Tensor, ended: torch.Tensor) -> torch.Tensor:
        """Scores as the algorithm sees them: clipped to ±algo.reward_clip, and replaced by
        algo.missing_eos_penalty when the response never ended (Huang et al. 2024's EOS trick)."""
        if self.algo.reward_clip is not None:
            scores = scores.clamp(-self.algo.reward_clip, self.algo.reward_clip)  # (N,)
        if self.algo.missing_eos_penalty is not None:
            scores = torch.where(ended, scores, torch.full_like(scores, self.algo.missing_eos_penalty))
        return scores  # (N,)

    def forward(self, rollout: Rollout) -> tuple[ResponseStats, torch.Tensor | None]:
        """Log-probs and entropy of the response tokens under the policy (the entropy differentiable only
        when it is in the loss), and values (N, T) if any."""
        stats = response_logprobs(
            self.policy,
            rollout,
            self.temperature,
            return_entropy=True,
            entropy_grad=self.algo.entropy_coef > 0,
            return_hidden=self.value_head is not None,
        )
        if self.value_head is not None:
            return stats, self.value_head(stats.hidden.float()).squeeze(-1)  # (N, T)
        if self.critic is not None:
            return stats, critic_values(self.critic, rollout)  # (N, T)
        return stats, None

    @torch.no_grad()
    def experience(self, rollout: Rollout, scores: torch.Tensor) -> tuple[Experience, dict[str, float]]:
        """Old log-probs, reference log-probs, KL-penalized rewards and advantages of a batch."""
        algo, mask = self.algo, rollout.response_mask  # (N, T)
        if self.value_head is not None or self.temperature != self.settings.sampling.temperature:
            # A fresh pass (it also gives the value head's values); else generation's own log-probs,
            # which equal a fresh pass.
            old_logprobs, values = self._in_parts(rollout, self._logprobs_and_values)  # (N, T) each
        else:
            old_logprobs, values = rollout.logprobs, None  # (N, T)
            if self.critic is not None:
                values = self._in_parts(rollout, functools.partial(critic_values, self.critic))  # (N, T)
        ref_logprobs = self._in_parts(  # (N, T)
            rollout, lambda part: self.reference(self.policy, part, self.temperature)
        )
        beta = self.kl_ctl.value if algo.kl.placement == "reward" else 0.0
        rewards = kl_penalized_rewards(scores, old_logprobs, ref_logprobs, mask, beta, algo.kl.estimator)
        if algo.whiten_rewards:
            rewards = masked_whiten(rewards, mask, shift_mean=False)  # (N, T)
        seq_kl = masked_sum(kl_estimate(old_logprobs, ref_logprobs, "k1"), mask, dim=-1)  # (N,)
        stats = {"kl": seq_kl.mean().item(), "return": masked_sum(rewards, mask, dim=-1).mean().item()}
        returns = None
        if algo.name == "ppo":
            advantages, returns = gae(rewards, values, mask, algo.value.gamma, algo.value.lam)  # (N, T)
        else:
            advantages = self.sequence_advantages(masked_sum(rewards, mask, dim=-1))  # (N,)
        if algo.whiten_advantages:
            adv_mask = mask if advantages.dim() == 2 else torch.ones_like(advantages)
            advantages = masked_whiten(advantages, adv_mask)
        return Experience(rollout, old_logprobs, ref_logprobs, advantages, values, returns), stats

    def _logprobs_and_values(self, rollout: Rollout) -> tuple[torch.Tensor, torch.Tensor | None]:
        stats, values = self.forward(rollout)
        return stats.logprobs, values  # (n, T), (n, T) or None

    def _in_parts(self, rollout: Rollout, fn):
        """fn(rollout) computed over micro-batches of rows and reassembled in row order: (N, ...) tensors,
        or a tuple of them (None entries stay None)."""
        parts = micro_batches(rollout.attention_mask.sum(1), self.settings.micro_batch_tokens)
        if len(parts) == 1:
            return fn(rollout)
        outputs = [fn(rollout.select(index)) for index in parts]
        order = torch.cat(parts).argsort()  # (N,) where each row landed

        def join(pieces):
            return None if pieces[0] is None else torch.cat(pieces)[order]

        if isinstance(outputs[0], tuple):
            return tuple(join(list(pieces)) for pieces in zip(*outputs, strict=True))
        return join(outputs)

    def sequence_advantages(self, returns: torch.Tensor) -> torch.Tensor:
        """(N,) advantages of whole completions from their returns (N,)."""
        k = self.algo.k
        if self.algo.name == "rloo":
            return rloo_advantages(returns, k)
        if self.algo.name == "grpo":
            return grpo_advantages(returns, k)
        if self.algo.baseline == "none":
            return returns
        mean = returns.mean().item()  # moving average of past batches' mean return
        baseline = mean if self.baseline is None else self.baseline
        decay = self.algo.baseline_decay
        self.baseline = decay * baseline + (1 - decay) * mean
        return returns - baseline

    def update(self, experience: Experience) -> dict[str, float]:
        """algo.epochs passes of algo.minibatches optimizer steps, each accumulating the gradients of its
        micro-batches; the scheduler steps once per RL step."""
        optimizer, n = self.optimizers(), len(experience.rollout)
        totals: dict[str, list[torch.Tensor]] = defaultdict(list)
        for _ in range(self.algo.epochs):
            for index in torch.randperm(n, device=self.device).split(n // self.algo.minibatches):
                stats = self.accumulate(experience.select(index))
                if stats is None:
                    continue  # a non-finite loss: this minibatch's update is skipped
                if (grad_norm := self.guard.check_grads(self, self.step_count)) is None:
                    continue
                stats["grad_norm"] = grad_norm
                self.clip_gradients(optimizer, self.settings.grad_clip or None, "norm")
                optimizer.step()
                for key, value in stats.items():
                    totals[key].append(value.detach().float())
        self.lr_schedulers().step()
        metrics = {k: torch.stack(v).mean().item() for k, v in totals.items()}
        return metrics | {"skipped_updates": float(self.guard.skipped)}

    def accumulate(self, minibatch: Experience) -> dict[str, torch.Tensor] | None:
        """The minibatch's gradient, one micro-batch at a time (each loss weighted by its share of the
        minibatch, so the sum is the minibatch's loss); its metrics (token-weighted means), or None if a
        loss was non-finite. Every rank runs the same number of micro-batches (their backward passes
        synchronize under DDP)."""
        self.optimizers().zero_grad()
        lengths = minibatch.rollout.attention_mask.sum(1)  # (b,) prompt + response tokens
        parts = micro_batches(lengths, self.settings.micro_batch_tokens, self._max_over_ranks)
        mask = minibatch.mask  # (b, T)
        tokens = mask.sum().clamp(min=1)  # () response tokens of the minibatch
        stats: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=self.device))
        for index in parts:
            share = Share(tokens=mask[index].sum() / tokens, rows=len(index) / len(lengths))
            loss, part_stats = self.loss(minibatch.select(index), share)
            if not self.guard.check_loss(self, loss, self.step_count):
                self.optimizers().zero_grad()
                return None
            self.manual_backward(loss)
            for key, value in part_stats.items():
                stats[key] += (value if key == "loss" else share.tokens * value).detach()
        return dict(stats)

    def _max_over_ranks(self, count: int) -> int:
        if self.trainer.world_size < 2:
            return count
        return int(self.trainer.strategy.reduce(torch.tensor(count, device=self.device), reduce_op="max"))

    def loss(
        self, batch: Experience, share: Share | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The algorithm's loss on a micro-batch, with the KL in the loss when placed there, minus the
        entropy bonus, scaled to the micro-batch's `share` of the minibatch: terms that are means over
        tokens by its share of tokens, terms that are means over sequences by its share of sequences."""
        algo, mask = self.algo, batch.mask
        tokens, rows = share or Share(1.0, 1.0)
        out, values = self.forward(batch.rollout)
        logprobs = out.logprobs  # (b, T)
        beta = self.kl_ctl.value if algo.kl.placement == "loss" else 0.0
        if algo.name == "ppo":  # token means
            loss, stats = ppo_policy_loss(logprobs, batch.old_logprobs, batch.advantages, mask, algo.clip)
            v_loss, v_stats = value_loss(values, batch.old_values, batch.returns, mask, algo.value.clip)
            loss = tokens * (loss + algo.value.coef * v_loss)
            stats |= v_stats | {
                "value_loss": v_loss.detach(),
                "explained_variance": explained_variance(values, batch.returns, mask),
            }
        elif algo.name == "grpo":  # a mean over sequences of per-sequence means
            loss, stats = grpo_loss(
                logprobs, batch.old_logprobs, batch.ref_logprobs, batch.advantages, mask, algo.clip, beta
            )
            loss = rows * loss
            stats["kl_loss"] = stats.pop("kl")
        else:  # a sum over tokens over the number of sequences
            loss, stats = reinforce_loss(logprobs, batch.advantages, mask)
            loss = rows * loss
        if beta and algo.name != "grpo":
            kl = kl_loss(logprobs, batch.ref_logprobs, mask)  # a mean over sequences
            loss, stats["kl_loss"] = loss + rows * beta * kl, kl.detach()
        entropy = masked_mean(out.entropy, mask)
        if algo.entropy_coef:
            loss = loss - tokens * algo.entropy_coef * entropy
        return loss, stats | {"loss": loss.detach(), "entropy": entropy.detach()}

    # ----------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def _evaluate(self) -> None:
        """Held-out prompts, one sample each with the same seed every time: gold, proxy, exact KL to the
        reference, length, and the win rate against the starting policy's samples judged by gold."""
        generator = torch.Generator(device=self.device).manual_seed(self.cfg.seed + 10_007)
        samples = sample_with_kl(
            self.policy,
            self.tokenizer,
            self.eval_prompt_ids,
            generate=lambda ids, mask: self._generate(ids, mask, generator),
            reference_logits=lambda part: (
                self.reference(self.policy, part, self.temperature, return_logits=True).logits
            ),
            temperature=self.temperature,
            batch_size=self.settings.sampling.batch_size,
        )
        completions = samples.completions
        proxy, gold = self.score(self.eval_prompts, completions)
        if gold is not None and self.sft_gold is None:
            self.sft_gold = gold.cpu()
        metrics = summarize(samples, proxy, gold, self.sft_gold)
        self.last_eval = {f"rl/eval/{k}": v for k, v in metrics.items()}
        self._log(self.last_eval)
        log.info(
            "rl eval @%d: %s",
            self.step_count,
            "  ".join(f"{k} {v:+.3f}" if k != "length" else f"{k} {v:.1f}" for k, v in metrics.items()),
        )
        if self.out_dir is not None and self.trainer.is_global_zero:
            with open(self.out_dir / "eval.jsonl", "a") as f:
                f.write(json.dumps({"step": self.step_count, **metrics}) + "\n")
            rows = [
                {"prompt": p, "completion": c} for p, c in zip(self.eval_prompts, completions, strict=True)
            ]
            (self.out_dir / "eval_samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    # ------------------------------------------------------------------------------- logging
    def _log(self, metrics: dict[str, float]) -> None:
        """Log at x = the RL step (not Lightning's global step, which counts optimizer steps)."""
        if self.trainer.is_global_zero:
            for logger in self.loggers:
                logger.log_metrics(metrics, step=self.step_count)

    def _log_samples(self, prompts, completions, scores, gold) -> None:
        rows = [
            [self.step_count, p, c, s, g]
            for p, c, s, g in zip(
                prompts[:TABLE_ROWS],
                completions[:TABLE_ROWS],
                scores[:TABLE_ROWS].tolist(),
                (gold[:TABLE_ROWS].tolist() if gold is not None else [None] * TABLE_ROWS),
                strict=False,
            )
        ]
        for logger in self.loggers:
            if hasattr(logger, "log_table") and self.trainer.is_global_zero:
                # one key per step: W&B tables logged under one key overwrite each other
                logger.log_table(
                    key=f"rl/samples/step_{self.step_count:06d}",
                    columns=["step", "prompt", "completion", "reward", "gold"],
                    data=rows,
                )

    # ---------------------------------------------------------------------------- checkpoints
    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if (
            self.step_count % self.settings.checkpoint_every == 0
            and self.step_count < self.settings.max_steps
        ):
            if self.checkpoint is not None:  # written by rank 0 (every rank takes part in the call)
                self.trainer.save_checkpoint(self.checkpoint)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["rl"] = {
            "step_count": self.step_count,
            "kl_controller": self.kl_ctl.state_dict(),
            "baseline": self.baseline,
            "sft_gold": self.sft_gold,
            "rng": _rng_state(self.generator),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["rl"]
        self.step_count, self.baseline, self.sft_gold = (
            state["step_count"],
            state["baseline"],
            state["sft_gold"],
        )
        self.kl_ctl.load_state_dict(state["kl_controller"])
        self._restored_rng = state["rng"]
        if self.out_dir is not None and self.global_rank == 0:
            _truncate_evals(self.out_dir / "eval.jsonl", self.step_count)


# ------------------------------------------------------------------------------------- helpers
class _Timer:
    """Wall seconds per phase; waits for the GPU so that each phase is charged its own kernels."""

    def __init__(self, device: torch.device):
        self.device, self.seconds = device, {}

    @contextmanager
    def __call__(self, phase: str):
        self._sync()
        start = time.perf_counter()
        yield
        self._sync()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _truncate_evals(path: Path, last_step: int) -> None:
    """Keep the evaluations up to `last_step`: later ones are redone by the resumed run."""
    if path.is_file():
        rows = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= last_step]
        path.write_text("".join(row + "\n" for row in rows))


def _rng_state(generator: torch.Generator) -> dict:
    state = {
        "python": random.getstate(),
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
        "sampler": generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _numpy_state() -> tuple:
    """numpy's RNG state with its key array as a tensor: checkpoints load with weights_only=True."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    return name, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached)


def _set_rng_state(state: dict, generator: torch.Generator) -> None:
    random.setstate(state["python"])
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    generator.set_state(state["sampler"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------------ build
def build(ctx: Context, out: Path) -> dict[str, float]:
    cfg, settings, log_dir = ctx.cfg, ctx.cfg.rl, ctx.log_dir("rl")
    log_dir.mkdir(parents=True, exist_ok=True)
    start = cfg.rl.policy or ctx.inputs["sft"]
    model_cfg = dataclasses.replace(cfg.model, tokenizer=None)
    tokenizer = load_tokenizer(start, model_cfg)
    policy = apply_peft(load_causal_lm(start, model_cfg, tokenizer), cfg.peft)
    reward_path = Path(cfg.reward.path or ctx.inputs["reward"]) if cfg.reward.kind == "rm" else None
    critic = None
    if cfg.algo.value.model == "critic":  # the value model starts as the reward model (Stiennon 2020)
        critic = load_reward_model(
            reward_path, model_cfg, load_tokenizer(reward_path, model_cfg), new_head=False
        )
    checkpoint = (ctx.checkpoint_dir or out) / CHECKPOINT  # rank 0's scratch folder, also for other ranks
    module = RLModule(
        policy,
        tokenizer,
        cfg,
        ctx.prompts(cfg.data.prompts, "prompts"),
        ctx.prompts(cfg.data.eval_prompts, "eval_prompts", settings.eval_prompts),
        reward_path,
        critic,
        out,
        checkpoint,
    )
    resume = cfg.resume == "auto" and checkpoint.is_file()
    if resume:
        log.info("rl: resuming from %s", checkpoint)
    else:  # a scratch folder left by a run killed before its first checkpoint
        (out / "eval.jsonl").unlink(missing_ok=True)
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        max_epochs=1,
        max_steps=-1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=make_loggers(cfg, "rl", log_dir),
        callbacks=[RichProgressBar()] if cfg.trainer.enable_progress_bar else [],
        enable_checkpointing=False,
        default_root_dir=str(log_dir),
    )
    steps = torch.utils.data.DataLoader(_Steps(module, settings.max_steps), batch_size=None)
    trainer.fit(module, train_dataloaders=steps, ckpt_path=str(checkpoint) if resume else None)
    check_ranks_agree(trainer, module)
    return export(module, tokenizer, out, cfg)


def export(module: RLModule, tokenizer, out: Path, cfg: Config) -> dict[str, float]:
    """The final policy as an HF folder (merged or adapter), the value function beside it, and metrics."""
    if not module.trainer.is_global_zero:
        return {}
    export_model(module.policy, tokenizer, out, cfg.peft)
    if module.value_head is not None:
        from safetensors.torch import save_file

        (out / "value").mkdir(exist_ok=True)
        save_file(
            {k: v.contiguous() for k, v in module.value_head.state_dict().items()},
            out / "value" / "head.safetensors",
        )
    if module.critic is not None:
        module.critic.save_pretrained(out / "value", safe_serialization=True)
    metrics = module.last_train | module.last_eval
    if module.sft_gold is not None and "rl/eval/gold" in module.last_eval:
        metrics["rl/eval/gold_gain"] = module.last_eval["rl/eval/gold"] - module.sft_gold.mean().item()
    return metrics
