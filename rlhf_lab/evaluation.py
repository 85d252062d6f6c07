"""Held-out evaluation of a policy, shared by the training stages (RL and DPO, every `*.eval_every`
steps) and the eval stage (the pipeline's summary): sample once per prompt, measure the exact KL to the
reference, score; `EvalRecord` keeps a training run's evaluations.

The KL is exact per token, Σ_v π(v|·) log π(v|·)/π_ref(v|·) from the full logits, summed over the
response: no estimator noise beyond the choice of the sampled contexts.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from rlhf_lab import budget as budgets
from rlhf_lab.config import SamplingConfig
from rlhf_lab.losses import categorical_kl
from rlhf_lab.rollout import Rollout, decode_responses, generate, generation_args, response_logprobs
from rlhf_lab.seeds import derive_seed
from rlhf_lab.tensors import left_pad

EVALS = "eval.jsonl"  # one row per held-out evaluation of a training run, in its artifact's folder
EVAL_SAMPLES = "eval_samples.jsonl"  # the last evaluation's prompts and completions
EVAL_HISTORY = "eval_history.jsonl"  # every evaluation's: step, prompt, completion (to rescore a run)
# eval.jsonl also carries the budget spent by each evaluation (budget_samples, _tokens, _updates, _flops)
KL_ROWS = 32  # sequences whose full (T, V) logits are held at once for the exact KL

Generate = Callable[[torch.Tensor, torch.Tensor], Rollout]  # (left-padded ids, mask) -> rollout
ReferenceLogits = Callable[[Rollout], torch.Tensor]  # rollout -> (B, T, V) reference logits


def held_out_generator(seed: int, device: torch.device | str) -> torch.Generator:
    """The sampler of held-out evaluation: the same draws at every evaluation of a run, and the same in
    RL's evaluations and the eval stage's."""
    return torch.Generator(device=device).manual_seed(derive_seed(seed, "held_out"))


@dataclass
class Samples:
    completions: list[str]  # one per prompt
    kl: torch.Tensor  # (B,) exact KL(π ‖ π_ref) of each response, nats
    length: torch.Tensor  # (B,) response tokens


@torch.no_grad()
def sample_with_kl(
    policy: nn.Module,
    tokenizer,
    prompt_ids: list[list[int]],
    generate: Generate,
    reference_logits: ReferenceLogits | None,
    temperature: float,
    batch_size: int,
) -> Samples:
    """One response per prompt from `generate`, its length, and its exact KL to the reference
    (zeros when `reference_logits` is None: the policy is its own reference)."""
    completions, kls, lengths = [], [], []
    for start in range(0, len(prompt_ids), batch_size):
        ids, mask = left_pad(prompt_ids[start : start + batch_size], tokenizer.pad_token_id)
        rollout = generate(ids, mask)
        for rows in torch.arange(len(rollout), device=rollout.response_ids.device).split(KL_ROWS):
            part = rollout.select(rows)
            if reference_logits is None:
                kls.append(torch.zeros(len(part)))
                continue
            logits = response_logprobs(policy, part, temperature, return_logits=True).logits  # (b, T, V)
            kls.append(categorical_kl(logits, reference_logits(part), part.response_mask).cpu())  # (b,)
        lengths.append(rollout.lengths().float().cpu())
        completions += decode_responses(tokenizer, rollout)
    return Samples(completions, torch.cat(kls), torch.cat(lengths))


def sample_held_out(
    policy: nn.Module,
    tokenizer,
    prompt_ids: list[list[int]],
    sampling: SamplingConfig,
    generator: torch.Generator,
    reference_logits: Callable[[Rollout, float], torch.Tensor] | None,
) -> Samples:
    """`sample_with_kl` with the shared generation under `sampling` and `generator`; the KL is taken at
    the sampling temperature (at 1 when greedy). `reference_logits(rollout, temperature)` gives the
    reference's (B, T, V) logits; None: the policy is its own reference."""
    temperature = sampling.temperature or 1.0
    return sample_with_kl(
        policy,
        tokenizer,
        prompt_ids,
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
        if reference_logits is None
        else lambda part: reference_logits(part, temperature),
        temperature=temperature,
        batch_size=sampling.batch_size,
    )


def clear_evals(out_dir: Path) -> None:
    """Remove the evaluations a run killed before its first checkpoint left in `out_dir`."""
    for name in (EVALS, EVAL_HISTORY):
        (out_dir / name).unlink(missing_ok=True)


def win_rate(gold: torch.Tensor, baseline: torch.Tensor) -> float:
    """Share of prompts where `gold` beats `baseline` (ties count half), both (B,)."""
    return ((gold > baseline).float() + 0.5 * (gold == baseline).float()).mean().item()


def summarize(
    samples: Samples,
    proxy: torch.Tensor | None,
    gold: torch.Tensor | None,
    baseline_gold: torch.Tensor | None,
) -> dict[str, float]:
    """reward (proxy, unless None), kl, length, and with a gold scorer: gold, and win_rate against
    `baseline_gold`."""
    metrics = {} if proxy is None else {"reward": proxy.mean().item()}
    metrics |= {"kl": samples.kl.mean().item(), "length": samples.length.mean().item()}
    if gold is not None:
        metrics["gold"] = gold.mean().item()
        if baseline_gold is not None:
            metrics["win_rate"] = win_rate(gold.cpu(), baseline_gold.cpu())
    return metrics


class EvalRecord:
    """What a training run (RL, DPO) keeps of its metrics, under `prefix` (`rl`, `dpo`): the last step's
    (`<prefix>/train/*`) and the last evaluation's, logged at x = the stage's own step; the starting
    policy's held-out gold, the baseline of the win rate and the gain (checkpointed by the module); the
    run's `Budget` (`rlhf_lab.budget`: samples, tokens, updates, FLOPs, wall time); and, on rank 0,
    `eval.jsonl`, `eval_samples.jsonl`, `eval_history.jsonl` and `budget.jsonl` in `out_dir`."""

    def __init__(self, prefix: str, out_dir: Path | None):
        self.prefix, self.out_dir = prefix, out_dir
        self.sft_gold: torch.Tensor | None = None  # (B,)
        self.last_train: dict[str, float] = {}
        self.last_eval: dict[str, float] = {}
        self.budget = budgets.Budget()
        self.updates_seen = 0  # the trainer's optimizer steps at the last `spend`

    def start_budget(self, module) -> None:
        """At the start of training: a fresh budget file at step 0, else (a resumed run) the budget of the
        checkpointed step, read back from it."""
        self.updates_seen = module.trainer.global_step
        path = self._file(module, budgets.BUDGET)
        if path is None:
            return
        if module.step_count == 0:
            path.unlink(missing_ok=True)  # left by a run killed before its first checkpoint
        else:
            self.budget = budgets.restore(path, module.step_count)

    def spend(self, module, samples: int = 0, tokens: int = 0, flops: int = 0, seconds: float = 0.0) -> None:
        """Add a step's spending (over all ranks) and the optimizer steps it took; rank 0 appends the
        totals to budget.jsonl."""
        steps = module.trainer.global_step  # optimizer steps, in manual optimization too
        self.budget.spend(samples, tokens, steps - self.updates_seen, flops, seconds)
        self.updates_seen = steps
        path = self._file(module, budgets.BUDGET)
        if path is not None:
            budgets.append(path, module.step_count, self.budget)

    def _file(self, module, name: str) -> Path | None:
        """`out_dir / name` on rank 0; None elsewhere or without an out_dir."""
        if self.out_dir is None or not module.trainer.is_global_zero:
            return None
        return self.out_dir / name

    def baseline(self, gold: torch.Tensor | None) -> torch.Tensor | None:
        """The starting policy's gold: the first gold this run measured."""
        if gold is not None and self.sft_gold is None:
            self.sft_gold = gold.cpu()
        return self.sft_gold

    def train(self, module, stats: dict[str, float]) -> None:
        self.last_train = {f"{self.prefix}/train/{k}": v for k, v in stats.items()}
        self.log(module, self.last_train)

    def evaluation(self, module, metrics: dict[str, float], prompts: list, completions: list[str]) -> None:
        """Log one evaluation (`metrics` keyed `eval/*` for the samples, other groups such as `val/*`
        besides) with the budget spent so far (`budget/*`, its counts), append it to eval.jsonl (`eval/`
        dropped, other groups as `val_*`, `budget_*`), write its samples and append them to the history."""
        metrics = metrics | {f"budget/{k}": v for k, v in self.budget.counts().items()}
        self.last_eval = {f"{self.prefix}/{k}": v for k, v in metrics.items()}
        self.log(module, self.last_eval)
        if (path := self._file(module, EVALS)) is None:
            return
        row = {"step": module.step_count} | {_column(k): v for k, v in metrics.items()}
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")
        samples = [{"prompt": p, "completion": c} for p, c in zip(prompts, completions, strict=True)]
        (self.out_dir / EVAL_SAMPLES).write_text("".join(json.dumps(r) + "\n" for r in samples))
        with open(self.out_dir / EVAL_HISTORY, "a") as f:
            f.writelines(json.dumps({"step": module.step_count} | r) + "\n" for r in samples)

    def log(self, module, metrics: dict[str, float]) -> None:
        """Log at x = the stage's step (not Lightning's global step, which counts optimizer steps)."""
        if module.trainer.is_global_zero:
            for logger in module.loggers:
                logger.log_metrics(metrics, step=module.step_count)

    def keep_evals_until(self, step: int) -> None:
        """Drop the evaluations (and their samples) after `step`: a resumed run redoes them."""
        for name in (EVALS, EVAL_HISTORY):
            path = None if self.out_dir is None else self.out_dir / name
            if path is not None and path.is_file():
                rows = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= step]
                path.write_text("".join(row + "\n" for row in rows))

    def final(self) -> dict[str, float]:
        """The last train and evaluation metrics, the budget spent (wall time included), and the held-out
        gold gained over the starting policy."""
        budget = {f"{self.prefix}/budget/{k}": v for k, v in dataclasses.asdict(self.budget).items()}
        metrics = self.last_train | self.last_eval | budget
        gold = self.last_eval.get(f"{self.prefix}/eval/gold")
        if self.sft_gold is not None and gold is not None:
            metrics[f"{self.prefix}/eval/gold_gain"] = gold - self.sft_gold.mean().item()
        return metrics


def _column(key: str) -> str:
    """An evaluation metric's eval.jsonl column: `eval/gold` -> `gold`, `val/accuracy` -> `val_accuracy`."""
    return key.removeprefix("eval/") if key.startswith("eval/") else key.replace("/", "_")
