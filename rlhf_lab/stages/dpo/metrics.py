"""What the DPO stage measures and logs: dpo/train/* every step, dpo/val/* on held-out pairs and
dpo/eval/* on held-out prompts every `dpo.eval_every` steps and at the end.

Held-out pairs: the loss, the implicit reward's accuracy (the chosen completion's reward above the
rejected one's) and mean margin, the chosen and rejected log-probs, and the accuracy against the gold
ordering where the pairs carry gold scores. Held-out prompts: the evaluation of the RL stage
(`evaluation.sample_with_kl`): one sample per prompt with the same draws every time, its gold, its
proxy score when there is a proxy, its exact KL to the reference (none for SimPO, which holds no
reference; `stage=eval` measures it against SFT), its length, and the win rate against the starting
policy's samples judged by gold. Each evaluation is appended to `eval.jsonl` in the artifact's folder,
with the budget spent so far (`rlhf_lab.budget`; `Params.step` counts a step's FLOPs).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from rlhf_lab.budget import flops, matmul_params, scorer_params
from rlhf_lab.evaluation import EvalRecord, held_out_generator, sample_held_out, summarize
from rlhf_lab.stages.dpo.loss import preference_loss
from rlhf_lab.stages.dpo.pairs import all_logps
from rlhf_lab.stages.dpo.sources import Online
from rlhf_lab.tracking import memory_mb

log = logging.getLogger("rlhf_lab.stages.dpo")


class DPOMetrics(EvalRecord):
    """The DPO stage's metrics of one run (`EvalRecord` under `dpo`), with the memory at the start and
    the budget (`rlhf_lab.budget`) of each step."""

    def __init__(self, out_dir: Path | None):
        super().__init__("dpo", out_dir)
        self.memory_at_start = 0.0
        self.params = Params()

    def start(self, module) -> None:
        self.memory_at_start = memory_mb(module.device)[0]  # models and pairs loaded, nothing trained
        self.params = Params.of(module)
        self.start_budget(module)
        if module.step_count == 0:
            self.evaluate(module)  # the starting policy: the baseline of the gains and the win rate

    def log_step(self, module, stats: dict[str, float]) -> None:
        seconds = sum(v for k, v in stats.items() if k.startswith("time/"))  # the round's and the step's
        self.spend(module, seconds=seconds, **self.params.step(module, stats))
        stats = stats | {
            "memory/peak_mb": memory_mb(module.device)[1],
            "memory/at_start_mb": self.memory_at_start,
        }
        self.train(module, stats)
        shown = {k: stats[k] for k in ("loss", "accuracy", "margin") if k in stats}
        module.log_dict(shown, prog_bar=True, logger=False)
        settings = module.settings
        if module.step_count % settings.eval_every == 0 or module.step_count == settings.max_steps:
            self.evaluate(module)

    @torch.no_grad()
    def evaluate(self, module) -> None:
        """Held-out pairs, then held-out samples; logged at the step reached and appended to eval.jsonl."""
        metrics = {f"val/{k}": v for k, v in pair_metrics(module).items()}
        completions, sampled = self.sample_metrics(module)
        metrics |= {f"eval/{k}": v for k, v in sampled.items()}
        shown = "  ".join(f"{k} {v:+.3f}" for k, v in metrics.items() if k.split("/")[1] in SHOWN)
        log.info("dpo eval @%d: %s", module.step_count, shown)
        self.evaluation(module, metrics, module.eval_prompts, completions)

    def sample_metrics(self, module) -> tuple[list[str], dict[str, float]]:
        """One sample per held-out prompt (the same draws every time) and its metrics: gold, proxy, exact
        KL to the reference (none without one: SimPO), length, win rate against the starting policy's."""
        policy, reference = module.policy, module.reference
        samples = sample_held_out(
            policy,
            module.tokenizer,
            module.eval_prompt_ids,
            module.settings.sampling,
            held_out_generator(module.seed, module.device),
            None
            if reference is None
            else lambda part, t: reference(policy, part, t, return_logits=True).logits,
        )
        prompts, completions = module.eval_prompts, samples.completions
        proxy = None if module.scorer is None else module.scorer.score(prompts, completions)
        gold = None if module.gold is None else module.gold.score(prompts, completions)
        metrics = summarize(samples, proxy, gold, self.baseline(gold))
        if reference is None:
            del metrics["kl"]  # zeros from sample_with_kl: there is no reference to diverge from
        return samples.completions, metrics


SHOWN = ("accuracy", "margin", "gold", "kl", "win_rate", "reward")  # in the evaluation's log line


@dataclass(frozen=True)
class Params:
    """N (`budget.matmul_params`) of each model a DPO run trains with: the policy, its reference (0 for
    SimPO) and the reward model that judges online rounds (0 where none does)."""

    policy: int = 0
    reference: int = 0
    judge: int = 0

    @staticmethod
    def of(module) -> Params:
        reference, judge = module.reference, getattr(module.source, "judge", None)
        copy = None if reference is None else reference.copy
        return Params(
            policy=matmul_params(module.policy),
            reference=0 if reference is None else matmul_params(module.policy if copy is None else copy),
            judge=scorer_params(judge),
        )

    def step(self, module, stats: dict[str, float]) -> dict[str, int]:
        """The samples, tokens and FLOPs of the DPO step just taken: 6N per token of its batch (both
        sequences of each pair); at a round's first step also the round's own passes, 2N per token: the
        reference over its training pairs, and online its sampling and the reward-model judge, whose
        tokens are estimated from the round's pairs (the mean prompt and completion of a pair)."""
        cost = {"flops": flops(self.policy, int(stats["tokens_per_step"]), trained=True)}
        source, r = module.source, int(stats["round"])
        if module.step_count - 1 != source.bounds(r)[0]:  # not the round's first step
            return cost
        pairs = source.train(r, module.policy)  # the round's pairs, as this step read them (cached)
        cost["flops"] += flops(self.reference, int(pairs.tokens().sum()))
        if isinstance(source, Online) and len(pairs):
            samples = len(source.round_prompts(r)) * module.cfg.collect.samples_per_prompt
            completion = sum(len(c) + len(j) for c, j in zip(pairs.chosen, pairs.rejected, strict=True)) / 2
            sequence = int(pairs.tokens().sum()) / 2  # a pair's tokens hold the prompt twice
            tokens, per_sample = round(samples * completion / len(pairs)), sequence / len(pairs)
            cost |= {"samples": samples, "tokens": tokens}
            cost["flops"] += flops(self.policy + self.judge, round(samples * per_sample))
        return cost


def pair_metrics(module) -> dict[str, float]:
    """The held-out pairs: loss, implicit-reward accuracy and margin, chosen and rejected log-probs, and
    agreement of the implicit reward with the gold ordering (pairs whose gold scores differ)."""
    pairs = module.source.val
    if pairs is None or len(pairs) == 0:
        return {}
    budget = module.settings.micro_batch_tokens or 4096  # a training pass's size, without gradients
    logps = all_logps(module.policy, pairs, module.tokenizer.pad_token_id, budget)
    loss, chosen, rejected = preference_loss(module.settings, module.beta, logps, pairs)
    margin = chosen - rejected  # (N,)
    metrics = {
        "loss": loss.item(),
        "accuracy": (margin > 0).float().mean().item(),
        "margin": margin.mean().item(),
        "chosen_logps": logps.chosen.mean().item(),
        "rejected_logps": logps.rejected.mean().item(),
    }
    gap = pairs.gold_chosen - pairs.gold_rejected  # (N,) NaN where unknown
    known = ~torch.isnan(gap) & (gap != 0)
    if known.any():
        metrics["gold_accuracy"] = ((margin[known] > 0) == (gap[known] > 0)).float().mean().item()
    return metrics
