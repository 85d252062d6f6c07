"""What the DPO stage measures and logs: dpo/train/* every step, dpo/val/* on held-out pairs and
dpo/eval/* on held-out prompts every `dpo.eval_every` steps and at the end.

Held-out pairs: the loss, the implicit reward's accuracy (the chosen completion's reward above the
rejected one's) and mean margin, the chosen and rejected log-probs, and the accuracy against the gold
ordering where the pairs carry gold scores. Held-out prompts: the evaluation of the RL stage
(`evaluation.sample_with_kl`): one sample per prompt with the same draws every time, its gold, its
proxy score when there is a proxy, its exact KL to the reference (none for SimPO, which holds no
reference; `stage=eval` measures it against SFT), its length, and the win rate against the starting
policy's samples judged by gold. Each evaluation is appended to `eval.jsonl` in the artifact's folder.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from rlhf_lab.evaluation import EvalRecord, held_out_generator, sample_held_out, summarize
from rlhf_lab.stages.dpo.loss import preference_loss
from rlhf_lab.stages.dpo.pairs import all_logps
from rlhf_lab.tracking import memory_mb

log = logging.getLogger("rlhf_lab.stages.dpo")


class DPOMetrics(EvalRecord):
    """The DPO stage's metrics of one run (`EvalRecord` under `dpo`), with the memory at the start."""

    def __init__(self, out_dir: Path | None):
        super().__init__("dpo", out_dir)
        self.memory_at_start = 0.0

    def start(self, module) -> None:
        self.memory_at_start = memory_mb(module.device)[0]  # models and pairs loaded, nothing trained
        if module.step_count == 0:
            self.evaluate(module)  # the starting policy: the baseline of the gains and the win rate

    def log_step(self, module, stats: dict[str, float]) -> None:
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
