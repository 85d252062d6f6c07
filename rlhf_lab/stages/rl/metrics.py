"""What the RL stage measures and logs: rl/train/* every step, rl/eval/* on held-out prompts.

The held-out evaluation samples one response per prompt with the same draws every time
(`evaluation.held_out_generator`) and reports gold, proxy, the exact KL to the reference, length, and
the win rate against the starting policy's samples judged by gold. Rank 0 appends each evaluation to
`eval.jsonl` in the artifact's folder, with the budget spent so far (`rlhf_lab.budget`; `Params.step`
counts a step's FLOPs).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from rlhf_lab.budget import flops, matmul_params, scorer_params
from rlhf_lab.data.chat import display
from rlhf_lab.evaluation import EvalRecord, held_out_generator, sample_with_kl, summarize
from rlhf_lab.models import eval_mode
from rlhf_lab.policy import Timer
from rlhf_lab.rollout import Rollout
from rlhf_lab.tracking import memory_mb, reset_peak_memory

log = logging.getLogger("rlhf_lab.stages.rl")
TABLE_ROWS = 16  # rollouts per W&B sample table


class Metrics(EvalRecord):
    """The RL stage's metrics of one run (`EvalRecord` under `rl`), with the memory at the start and the
    budget (`rlhf_lab.budget`) of each step."""

    def __init__(self, out_dir: Path | None):
        super().__init__("rl", out_dir)
        self.memory_at_start = 0.0
        self.params = Params()

    @property
    def train_seconds(self) -> float:
        """The RL steps' wall time so far, evaluations left out (checkpointed by the module)."""
        return self.budget.wall_time

    @train_seconds.setter
    def train_seconds(self, seconds: float) -> None:
        self.budget.wall_time = seconds

    def start(self, module) -> None:
        self.memory_at_start = memory_mb(module.device)[0]  # models loaded, nothing run yet
        reset_peak_memory(module.device)  # memory/peak_mb: this stage's peak, not an earlier job's
        self.params = Params.of(module)
        self.start_budget(module)
        if module.step_count == 0 and self.sft_gold is None:
            self.evaluate(module)  # the starting (SFT) policy: the baseline of the gains and the win rate

    def step_stats(self, module, rollout: Rollout, scores, gold, ended, stats: dict, timer: Timer) -> dict:
        """A step's metrics, averaged over the ranks; the step's budget, summed over them, spent."""
        seconds = sum(timer.seconds.values())
        self.spend(module, seconds=seconds, **_sum_over_ranks(module, self.params.step(module, rollout)))
        stats = stats | {
            "reward": scores.mean().item(),
            "length": rollout.lengths().float().mean().item(),
            "eos_fraction": ended.float().mean().item(),
            "lr": module.optimizers().param_groups[0]["lr"],
            **{f"time/{k}": v for k, v in timer.seconds.items()},
            "time/step": seconds,
            "time/total": self.train_seconds,
            "tokens_per_second": rollout.lengths().sum().item() / max(seconds, 1e-9),
            "memory/peak_mb": memory_mb(module.device)[1],
            "memory/at_start_mb": self.memory_at_start,
            "memory/weights_mb": weights_mb(module),
        }
        if gold is not None:
            stats["gold"] = gold.mean().item()
        return _mean_over_ranks(module, stats)

    def log_step(self, module, stats: dict, samples: tuple[list[str], list[str]], scores, gold) -> None:
        """Log a step's metrics (the progress bar shows a few); a sample table every rl.samples_every
        steps; a held-out evaluation every rl.eval_every steps and after the last."""
        settings, step = module.settings, module.step_count
        self.train(module, stats)
        shown = ("reward", "kl", "gold") if gold is not None else ("reward", "kl")
        module.log_dict({k: stats[k] for k in shown}, prog_bar=True, logger=False)
        if step % settings.samples_every == 0:
            _log_samples(module, *samples, scores, gold)
        if step % settings.eval_every == 0 or step == settings.max_steps:
            self.evaluate(module)

    @torch.no_grad()
    def evaluate(self, module) -> None:
        """Held-out prompts, one sample each with the same draws every time: gold, proxy, exact KL to the
        reference, length, and the win rate against the starting policy's samples judged by gold."""
        generator = held_out_generator(module.seed, module.device)
        with eval_mode(module.policy):  # no dropout (algo.dropout) in what is measured
            samples = sample_with_kl(
                module.policy,
                module.tokenizer,
                module.eval_prompt_ids,
                generate=lambda ids, mask: module.generate(ids, mask, generator),
                reference_logits=module.reference_logits,
                # the KL of the distributions that sample, whatever the update's algo.scale_logprobs
                temperature=module.settings.sampling.temperature,
                batch_size=module.settings.sampling.batch_size,
            )
        proxy, gold = module.score(module.eval_prompts, samples.completions)
        metrics = summarize(samples, proxy, gold, self.baseline(gold))
        shown = "  ".join(f"{k} {v:+.3f}" if k != "length" else f"{k} {v:.1f}" for k, v in metrics.items())
        log.info("rl eval @%d: %s", module.step_count, shown)
        metrics = {f"eval/{k}": v for k, v in metrics.items()}
        self.evaluation(module, metrics, module.eval_prompts, samples.completions)


@dataclass(frozen=True)
class Params:
    """N (`budget.matmul_params`) of each model an RL step runs: the policy (with its value head), its
    reference, the critic and the reward model (0 where the run has none)."""

    policy: int = 0
    reference: int = 0
    critic: int = 0
    reward: int = 0

    @staticmethod
    def of(module) -> Params:
        head = 0 if module.value_head is None else sum(p.numel() for p in module.value_head.parameters())
        copy = module.reference.copy
        return Params(
            policy=matmul_params(module.policy) + head,
            reference=matmul_params(module.policy if copy is None else copy),  # LoRA: the base, adapter off
            critic=matmul_params(module.critic),
            reward=scorer_params(module.scorer),
        )

    def step(self, module, rollout: Rollout) -> dict[str, int]:
        """This rank's samples, tokens and FLOPs of one RL step: 2N per token for generation, the
        old log-probs when they need a fresh pass (`RLModule.before_update`), the reference, the critic's
        values and the reward model; 6N per token for each of algo.epochs passes of the update through the
        policy (and critic). Tokens: prompt + response of each of the N rollouts. The sampler's log-probs at
        another temperature than sampling's are one more pass (`RLModule.sampler_logprobs`)."""
        tokens = int(rollout.attention_mask.sum())
        retemper = module.temperature != module.settings.sampling.temperature
        passes = 1 + module.fresh_old_logprobs + (module.records_sampler and retemper)
        forward = self.policy * passes + self.reference + self.critic + self.reward
        trained = module.algo.epochs * (self.policy + self.critic)
        return {
            "samples": len(rollout),
            "tokens": int(rollout.lengths().sum()),
            "flops": flops(forward, tokens) + flops(trained, tokens, trained=True),
        }


def _sum_over_ranks(module, counts: dict[str, int]) -> dict[str, int]:
    """Integer counts summed over the ranks (each drew its own rollouts)."""
    if module.trainer.world_size < 2:
        return counts
    values = torch.tensor([counts[k] for k in sorted(counts)], dtype=torch.float64, device=module.device)
    values = module.trainer.strategy.reduce(values, reduce_op="sum")
    return {k: round(v) for k, v in zip(sorted(counts), values.tolist(), strict=True)}


def weights_mb(module) -> float:
    """MiB of the tensors that the algorithm and its settings keep in memory for the whole run: the
    weights of the policy, the value head or critic and the reference's frozen copy (none with LoRA), and
    the optimizer's state. Counted, not measured: the same on every machine, unlike the peak."""
    tensors = {id(p): p for p in module.parameters()}  # the policy, value head, critic
    if module.reference.copy is not None:
        tensors |= {id(p): p for p in module.reference.copy.parameters()}
    for state in module.optimizers().optimizer.state.values():
        tensors |= {id(v): v for v in state.values() if torch.is_tensor(v)}
    return sum(t.numel() * t.element_size() for t in tensors.values()) / 2**20


def _mean_over_ranks(module, stats: dict[str, float]) -> dict[str, float]:
    """Each metric averaged over the ranks (each drew its own rollouts), a maximum (`*_max`) the largest,
    in one all-reduce each; the adaptive β then follows the same KL on every rank."""
    if module.trainer.world_size < 2:
        return stats
    reduced = {}
    for op, keys in (
        ("mean", [k for k in sorted(stats) if not k.endswith("_max")]),
        ("max", [k for k in sorted(stats) if k.endswith("_max")]),
    ):
        if keys:
            values = torch.tensor([stats[k] for k in keys], dtype=torch.float64, device=module.device)
            values = module.trainer.strategy.reduce(values, reduce_op=op)
            reduced |= dict(zip(keys, values.tolist(), strict=True))
    return reduced


def _log_samples(module, prompts, completions, scores, gold) -> None:
    if not module.trainer.is_global_zero:
        return
    golds = gold[:TABLE_ROWS].tolist() if gold is not None else [None] * TABLE_ROWS
    rows = [
        [module.step_count, display(p), c, s, g]  # a conversational prompt as plain text
        for p, c, s, g in zip(
            prompts[:TABLE_ROWS], completions[:TABLE_ROWS], scores[:TABLE_ROWS].tolist(), golds, strict=False
        )
    ]
    for logger in module.loggers:
        if hasattr(logger, "log_table"):  # one key per step: W&B tables logged under one key overwrite
            logger.log_table(
                key=f"rl/samples/step_{module.step_count:06d}",
                columns=["step", "prompt", "completion", "reward", "gold"],
                data=rows,
            )
