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

import json
import logging
from pathlib import Path

import torch

from rlhf_lab.dpo.loss import preference_loss
from rlhf_lab.dpo.pairs import all_logps
from rlhf_lab.evaluation import held_out_generator, sample_with_kl, win_rate
from rlhf_lab.rollout import generate, generation_args
from rlhf_lab.tracking import memory_mb

log = logging.getLogger("rlhf_lab.dpo")
EVALS = "eval.jsonl"


class DPOMetrics:
    """The last train, held-out-pair and held-out-sample metrics of a run, and the starting policy's
    held-out gold (the baseline of the win rate; checkpointed)."""

    def __init__(self, out_dir: Path | None):
        self.out_dir = out_dir
        self.sft_gold: torch.Tensor | None = None
        self.last_train: dict[str, float] = {}
        self.last_eval: dict[str, float] = {}
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
        self.last_train = {f"dpo/train/{k}": v for k, v in stats.items()}
        _log(module, self.last_train)
        shown = {k: stats[k] for k in ("loss", "accuracy", "margin") if k in stats}
        module.log_dict(shown, prog_bar=True, logger=False)
        settings = module.settings
        if module.step_count % settings.eval_every == 0 or module.step_count == settings.max_steps:
            self.evaluate(module)

    @torch.no_grad()
    def evaluate(self, module) -> None:
        """Held-out pairs, then held-out samples; logged at the step reached and appended to eval.jsonl."""
        metrics = {f"val/{k}": v for k, v in pair_metrics(module).items()}
        metrics |= {f"eval/{k}": v for k, v in self.sample_metrics(module).items()}
        self.last_eval = {f"dpo/{k}": v for k, v in metrics.items()}
        _log(module, self.last_eval)
        shown = "  ".join(f"{k} {v:+.3f}" for k, v in metrics.items() if k.split("/")[1] in SHOWN)
        log.info("dpo eval @%d: %s", module.step_count, shown)
        if self.out_dir is not None and module.trainer.is_global_zero:
            row = {
                "step": module.step_count,
                **{k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("eval/")},
            }
            row |= {k.replace("/", "_"): v for k, v in metrics.items() if k.startswith("val/")}
            with open(self.out_dir / EVALS, "a") as f:
                f.write(json.dumps(row) + "\n")

    def sample_metrics(self, module) -> dict[str, float]:
        """One sample per held-out prompt (the same draws every time): gold, proxy, exact KL to the
        reference, length, win rate against the starting policy's samples."""
        sampling, policy, tokenizer = module.settings.sampling, module.policy, module.tokenizer
        generator = held_out_generator(module.seed, module.device)
        temperature = sampling.temperature or 1.0
        reference = module.reference
        samples = sample_with_kl(
            policy,
            tokenizer,
            module.eval_prompt_ids,
            generate=lambda ids, mask: generate(
                policy,
                ids,
                mask,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                generator=generator,
                **generation_args(sampling),
            ),
            reference_logits=None
            if reference is None
            else lambda part: reference(policy, part, temperature, return_logits=True).logits,
            temperature=temperature,
            batch_size=sampling.batch_size,
        )
        metrics = {"length": samples.length.mean().item()}
        if reference is not None:
            metrics["kl"] = samples.kl.mean().item()
        if module.scorer is not None:
            metrics["reward"] = module.scorer.score(module.eval_prompts, samples.completions).mean().item()
        if module.gold is not None:
            gold = module.gold.score(module.eval_prompts, samples.completions)  # (B,)
            self.sft_gold = gold if self.sft_gold is None else self.sft_gold
            metrics |= {"gold": gold.mean().item(), "win_rate": win_rate(gold, self.sft_gold)}
        if self.out_dir is not None and module.trainer.is_global_zero:
            rows = [
                {"prompt": p, "completion": c}
                for p, c in zip(module.eval_prompts, samples.completions, strict=True)
            ]
            (self.out_dir / "eval_samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return metrics

    def keep_evals_until(self, step: int) -> None:
        """Drop the evaluations after `step` (a resumed run redoes them)."""
        path = None if self.out_dir is None else self.out_dir / EVALS
        if path is not None and path.is_file():
            rows = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= step]
            path.write_text("".join(row + "\n" for row in rows))

    def final(self) -> dict[str, float]:
        """The last train and evaluation metrics, and the held-out gold gained over the starting policy."""
        metrics = self.last_train | self.last_eval
        if self.sft_gold is not None and "dpo/eval/gold" in self.last_eval:
            metrics["dpo/eval/gold_gain"] = self.last_eval["dpo/eval/gold"] - self.sft_gold.mean().item()
        return metrics


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


def _log(module, metrics: dict[str, float]) -> None:
    """Log at x = the DPO step."""
    if module.trainer.is_global_zero:
        for logger in module.loggers:
            logger.log_metrics(metrics, step=module.step_count)
