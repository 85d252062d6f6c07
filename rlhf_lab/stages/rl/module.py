"""The RL LightningModule: one RL step per batch, manual optimization.

`training_step` reads top to bottom: rollout → score → experience → update → log. What differs
between algorithms is one entry of `algorithms.ALGORITHMS`; nothing here branches on its name. With
rl.staleness=k the rollouts come from the weights of step t − k (`staleness.StaleWeights`), and the
learner's old log-probs from a fresh pass beside the sampler's (`sample`, `experience.corrected`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections import defaultdict
from pathlib import Path

import lightning as L
import torch
from torch import nn

from rlhf_lab.config import Config, ConfigError
from rlhf_lab.data.chat import Prompt
from rlhf_lab.data.prompts import encode_prompts
from rlhf_lab.faults import FaultGuard
from rlhf_lab.losses import AdaptiveKLController, FixedKLController, kl_loss
from rlhf_lab.models import add_training_dropout, eval_mode
from rlhf_lab.optim import build_optimizer
from rlhf_lab.policy import PromptStream, Reference, Timer, in_parts, micro_batches
from rlhf_lab.rollout import (
    ResponseStats,
    Rollout,
    decode_responses,
    generate,
    generation_args,
    response_logprobs,
)
from rlhf_lab.scorers import ensemble_metrics, gold_scorer, objective_scorer, scores_and_members
from rlhf_lab.seeds import derive_seed, rng_state, set_rng_state, stage_seed
from rlhf_lab.stages.rl.algorithms import ALGORITHMS, KLPlacement, MovingAverage
from rlhf_lab.stages.rl.experience import WHOLE, Experience, Share, assemble, corrected, critic_values
from rlhf_lab.stages.rl.metrics import Metrics
from rlhf_lab.stages.rl.staleness import StaleWeights
from rlhf_lab.tensors import left_pad, masked_mean, repeat_each


class RLModule(L.LightningModule):
    """Policy (and value) training against a scorer with a KL penalty to the reference."""

    def __init__(
        self,
        policy: nn.Module,
        tokenizer,
        cfg: Config,
        prompts: list[Prompt],
        eval_prompts: list[Prompt],
        inputs: dict,
        critic: nn.Module | None = None,
        out_dir: Path | None = None,
        checkpoint: Path | None = None,
    ):
        super().__init__()
        self.automatic_optimization = False
        self.policy, self.tokenizer, self.critic = policy, tokenizer, critic
        self.cfg, self.algo, self.settings = cfg, cfg.algo, cfg.rl
        self.algorithm = ALGORITHMS[self.algo.name]
        self.value_head = self._value_head(policy) if self.algo.value.model == "head" else None
        self.reference = Reference(policy)
        # dropout is off in every model (Huang 2024); algo.dropout > 0 puts it back into the update's passes
        add_training_dropout(policy, self.algo.dropout, key="algo.dropout")  # not in the reference's copy
        self.train()  # models load in eval mode; the update runs in train mode, everything else in eval
        self.inputs = inputs  # upstream artifacts: the objective's reward model, if any
        max_prompt = cfg.data.max_prompt_length
        self.prompts, self.eval_prompts = prompts, eval_prompts
        self.prompt_ids = encode_prompts(tokenizer, prompts, max_prompt, "RL prompts")
        self.eval_prompt_ids = encode_prompts(tokenizer, eval_prompts, max_prompt, "RL eval prompts")
        k = self.algo.samples_per_prompt
        self.seed = stage_seed(cfg, "rl")  # rl.seed, or the run's seed
        self.stream = PromptStream(len(prompts), self.settings.rollouts_per_step // k, self.seed)
        kl = self.algo.kl
        self.kl_ctl = (
            AdaptiveKLController(kl.beta, kl.target, kl.horizon)
            if kl.adaptive
            else FixedKLController(kl.beta)
        )
        # the distribution of every log-prob of ratios and KL: the sampling temperature (Huang 2024), or 1
        # with scale_logprobs=false; the sampler's top-k / top-p with truncate_logprobs (docs/stages.md)
        sampling = self.settings.sampling
        self.temperature = sampling.temperature if self.algo.scale_logprobs else 1.0
        truncated = self.algo.truncate_logprobs
        self.truncation = dict(top_k=sampling.top_k, top_p=sampling.top_p) if truncated else {}
        self.stop_token_id = self._stop_token_id(self.algo.stop_token)
        self.step_count = 0  # RL steps done: the position in the prompt stream
        self.stale = StaleWeights(self.settings.staleness)  # the sampler's weights, k steps behind
        self.baseline = MovingAverage(self.algo.baseline_decay)  # reinforce's
        self.metrics = Metrics(out_dir)
        self.checkpoint, self._restored_rng = checkpoint, None
        self.guard = FaultGuard("rl", self.settings.max_nonfinite, checkpoint)

    @property
    def kl(self) -> KLPlacement:
        """Where β (its controller's current value) enters this step: reward, the algorithm's loss or ours."""
        return self.algorithm.kl_placement(self.algo.kl.placement, self.kl_ctl.value)

    @property
    def fresh_old_logprobs(self) -> bool:
        """Whether the old log-probs need a fresh pass: with a value head (the pass gives its values),
        log-probs at another temperature than sampling's, or a sampler k steps behind (rl.staleness: the
        learner's own are needed); else generation's own log-probs are the same."""
        fresh = self.value_head is not None or self.settings.staleness > 0
        return fresh or self.temperature != self.settings.sampling.temperature

    @property
    def records_sampler(self) -> bool:
        """Whether the sampler's log-probs are kept beside the learner's: with stale rollouts or a
        correction (algo.off_policy)."""
        return self.settings.staleness > 0 or self.algo.off_policy.correction != "none"

    @staticmethod
    def _value_head(policy: nn.Module) -> nn.Linear:
        hidden = policy.config.hidden_size
        head = nn.Linear(hidden, 1)
        nn.init.normal_(head.weight, std=1 / math.sqrt(hidden + 1))
        nn.init.zeros_(head.bias)
        return head

    def _stop_token_id(self, text: str | None) -> int | None:
        if text is None:
            return None
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ConfigError(
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
        self.scorer = objective_scorer(self.cfg, self.inputs, self.device)
        self.gold = gold_scorer(self.cfg, self.device)
        seed = derive_seed(self.seed, "rollouts", self.global_rank)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    def on_train_start(self) -> None:
        self.metrics.start(self)

    # --------------------------------------------------------------------------- the RL step
    def training_step(self, step: int, batch_idx: int) -> None:
        if self._restored_rng is not None:  # here, after Lightning's own setup has drawn its seeds
            set_rng_state(self._restored_rng, self.generator)
            self._restored_rng = None
        timer = Timer(self.device)
        with timer("generation"):
            index = self.stream.batch(self.step_count, self.global_rank, self.trainer.world_size)
            rollout, sampler_logprobs = self.sample([self.prompt_ids[i] for i in index])  # N = prompts × k
        with timer("scoring"):
            prompts = repeat_each([self.prompts[i] for i in index], self.algo.samples_per_prompt)  # (N,)
            completions = decode_responses(self.tokenizer, rollout)
            scores, gold, members = self.score_members(prompts, completions)  # (N,), (N,), (M, N)
            ended = self.ended(rollout)  # (N,)
        with timer("update"):
            experience, stats = self.experience(rollout, self.shape(scores, ended), sampler_logprobs)
            stats |= self.update(experience)
        if members is not None:  # an ensemble objective (Coste 2023): its members' means and disagreement
            stats |= ensemble_metrics(members)
        self.step_count += 1
        stats = self.metrics.step_stats(self, rollout, scores, gold, ended, stats, timer)  # over ranks
        self.kl_ctl.update(stats["kl"], len(rollout) * self.trainer.world_size)
        self.metrics.log_step(self, stats | {"beta": self.kl_ctl.value}, (prompts, completions), scores, gold)

    def sample(self, prompt_ids: list[list[int]]) -> tuple[Rollout, torch.Tensor | None]:
        """`rollout` by the sampler, the policy of step t − rl.staleness (the current one at 0), and its
        log-probs (N, T) where they are recorded (`records_sampler`), else None."""
        with self.stale.sampler(self.policy):
            rollout = self.rollout(prompt_ids)
            return rollout, self.sampler_logprobs(rollout) if self.records_sampler else None

    @torch.no_grad()
    def sampler_logprobs(self, rollout: Rollout) -> torch.Tensor:
        """(N, T) the sampler's log-probs in the distribution of the learner's (algo.scale_logprobs,
        truncate_logprobs): generation's own, or a pass under the sampler's weights at another temperature."""
        if self.temperature == self.settings.sampling.temperature:
            return rollout.logprobs  # (N, T)
        with eval_mode(self.policy):
            return in_parts(
                rollout,
                lambda part: response_logprobs(self.policy, part, self.temperature, **self.truncation),
                self.settings.micro_batch_tokens,
            )  # (N, T)

    def rollout(self, prompt_ids: list[list[int]]) -> Rollout:
        """algo.samples_per_prompt samples of each prompt (rows i*k .. i*k+k−1)."""
        ids, mask = left_pad(
            repeat_each(prompt_ids, self.algo.samples_per_prompt), self.tokenizer.pad_token_id
        )
        return self.generate(ids, mask, self.generator)  # ids, mask (N, P)

    def generate(self, ids: torch.Tensor, mask: torch.Tensor, generator: torch.Generator) -> Rollout:
        """Sampled responses to left-padded prompts (N, P), cut at the stop token if one is set."""
        pad = self.tokenizer.pad_token_id
        rollout = generate(
            self.policy,
            ids,
            mask,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=pad,
            generator=generator,
            truncated_logprobs=self.algo.truncate_logprobs,
            **generation_args(self.settings.sampling),
        )
        return rollout if self.stop_token_id is None else rollout.truncate_after(self.stop_token_id, pad)

    def ended(self, rollout: Rollout) -> torch.Tensor:
        """(N,) bool: the response ended by itself (EOS or the stop token), not cut at max_new_tokens."""
        ended = rollout.ends_with_eos  # (N,)
        if self.stop_token_id is not None:
            last = (rollout.lengths() - 1).clamp(min=0).unsqueeze(1)  # (N, 1)
            ended = ended | (rollout.response_ids.gather(1, last).squeeze(1) == self.stop_token_id)
        return ended

    def score(
        self, prompts: list[Prompt], completions: list[str]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(objective scores (N,), gold scores (N,) or None), on the module's device."""
        return self.score_members(prompts, completions)[:2]

    def score_members(
        self, prompts: list[Prompt], completions: list[str]
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """`score`, and an ensemble objective's member scores (M, N) (None for any other objective)."""
        scores, members = scores_and_members(self.scorer, prompts, completions)  # (N,), (M, N) or None
        scores = scores.to(self.device)
        if self.gold is None:
            return scores, None, members
        same = self.cfg.objective.kind == "gold"  # the objective is the gold scorer itself
        gold = scores if same else self.gold.score(prompts, completions).to(self.device)  # (N,)
        return scores, gold, members

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
            **self.truncation,
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
    def experience(
        self, rollout: Rollout, scores: torch.Tensor, sampler_logprobs: torch.Tensor | None = None
    ) -> tuple[Experience, dict[str, float]]:
        """`experience.assemble` from the old and reference log-probs and the values; the rows the
        algorithm keeps (`Algorithm.keep`), the generation budget, and, given the sampler's log-probs
        (N, T), the advantages weighted for the mismatch (`experience.corrected`, algo.off_policy)."""
        old_logprobs, ref_logprobs, values = self.before_update(rollout)  # (N, T) each; values or None
        advantages_of = functools.partial(self.algorithm.advantages, algo=self.algo, baseline=self.baseline)
        experience, stats = assemble(
            rollout, scores, old_logprobs, ref_logprobs, values, self.algo, advantages_of, self.kl.in_reward
        )
        keep = None
        if self.algorithm.keep is not None:
            keep = self.algorithm.keep(scores, self.algo.samples_per_prompt)  # (N,) bool
            stats["kept_fraction"] = keep.float().mean().item()
        budget = self.settings.sampling.max_new_tokens
        experience = dataclasses.replace(
            experience, keep=keep, max_new_tokens=budget, sampler_logprobs=sampler_logprobs
        )
        if sampler_logprobs is None:
            return experience, stats
        experience, off_policy = corrected(experience, self.algo.off_policy)
        return experience, stats | off_policy

    def before_update(self, rollout: Rollout) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Old and reference log-probs (N, T) and values (N, T) or None, in eval mode (algo.dropout acts in
        the update only)."""
        budget = self.settings.micro_batch_tokens
        with eval_mode(self.policy):
            if self.fresh_old_logprobs:
                old_logprobs, values = in_parts(rollout, self._logprobs_and_values, budget)  # (N, T) each
            else:
                old_logprobs, values = rollout.logprobs, None  # (N, T)
                if self.critic is not None:
                    values = in_parts(rollout, functools.partial(critic_values, self.critic), budget)
            ref_logprobs = in_parts(
                rollout,
                lambda part: self.reference(self.policy, part, self.temperature, **self.truncation),
                budget,
            )  # (N, T)
        return old_logprobs, ref_logprobs, values

    def _logprobs_and_values(self, rollout: Rollout) -> tuple[torch.Tensor, torch.Tensor | None]:
        stats, values = self.forward(rollout)
        return stats.logprobs, values  # (n, T), (n, T) or None

    # ----------------------------------------------------------------------------------- update
    def update(self, experience: Experience) -> dict[str, float]:
        """algo.epochs passes of algo.minibatches optimizer steps, each accumulating the gradients of its
        micro-batches; the scheduler steps once per RL step."""
        optimizer, n = self.optimizers(), len(experience.rollout)
        totals: dict[str, list[torch.Tensor]] = defaultdict(list)
        for _ in range(self.algo.epochs):
            for index in torch.randperm(n, device=self.device).split(n // self.algo.minibatches):
                minibatch = experience.select(index)
                if minibatch.keep is not None and self._max_over_ranks(int(minibatch.mask.sum())) == 0:
                    continue  # every row left out (e.g. DAPO's equal-reward groups), on every rank
                stats = self.accumulate(minibatch)
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
        metrics = {k: _reduce(k, torch.stack(v)).item() for k, v in totals.items()}
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
                if key.endswith("_max"):  # a maximum, not a mean (ratio_max)
                    stats[key] = torch.maximum(stats[key], value.detach())
                else:
                    stats[key] += (value if key == "loss" else share.tokens * value).detach()
        return dict(stats)

    def _max_over_ranks(self, count: int) -> int:
        if self.trainer.world_size < 2:
            return count
        return int(self.trainer.strategy.reduce(torch.tensor(count, device=self.device), reduce_op="max"))

    def loss(self, batch: Experience, share: Share = WHOLE) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The algorithm's loss on a micro-batch, plus β·KL when the KL is placed in the loss, minus the
        entropy bonus, each term weighted by the micro-batch's `share` of what it averages over."""
        algo, mask = self.algo, batch.mask
        out, values = self.forward(batch.rollout)
        kl = self.kl
        loss, stats = self.algorithm.loss(out.logprobs, values, batch, algo, kl.in_own_loss)
        loss = share.of(self.algorithm.averages_over) * loss
        if kl.added_to_loss:
            kl_term = kl_loss(out.logprobs, batch.ref_logprobs, mask)  # a mean over sequences
            loss, stats["kl_loss"] = loss + share.rows * kl.added_to_loss * kl_term, kl_term.detach()
        entropy = masked_mean(out.entropy, mask)
        if algo.entropy_coef:
            loss = loss - share.tokens * algo.entropy_coef * entropy
        return loss, stats | {"loss": loss.detach(), "entropy": entropy.detach()}

    @torch.no_grad()
    def reference_logits(self, rollout: Rollout) -> torch.Tensor:
        """(N, T, V) the reference's logits / the sampling temperature of a rollout (for the exact KL of the
        held-out evaluation: the distributions that sample, whatever algo.scale_logprobs)."""
        temperature = self.settings.sampling.temperature
        return self.reference(self.policy, rollout, temperature, return_logits=True).logits

    # ---------------------------------------------------------------------------- checkpoints
    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        due = (
            self.step_count % self.settings.checkpoint_every == 0
            and self.step_count < self.settings.max_steps
        )
        if due and self.checkpoint is not None:  # written by rank 0 (every rank takes part in the call)
            self.trainer.save_checkpoint(self.checkpoint)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["rl"] = {
            "step_count": self.step_count,
            "kl_controller": self.kl_ctl.state_dict(),
            "baseline": self.baseline.value,
            "sft_gold": self.metrics.sft_gold,
            "rng": rng_state(self.generator),
            "train_seconds": self.metrics.train_seconds,
            "stale_weights": self.stale.state_dict(),  # the sampler's next k weights (rl.staleness)
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["rl"]
        self.step_count, self.baseline.value = state["step_count"], state["baseline"]
        self.metrics.sft_gold, self._restored_rng = state["sft_gold"], state["rng"]
        self.metrics.train_seconds = state.get("train_seconds", 0.0)  # older checkpoints lack it
        self.kl_ctl.load_state_dict(state["kl_controller"])
        self.stale.load_state_dict(state.get("stale_weights", []))
        if self.global_rank == 0:
            self.metrics.keep_evals_until(self.step_count)


def _reduce(key: str, values: torch.Tensor) -> torch.Tensor:
    """A metric over a step's minibatches: the largest of a maximum (`*_max`), else the mean."""
    return values.max() if key.endswith("_max") else values.mean()
