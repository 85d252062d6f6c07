"""What a training run (RL, DPO) has spent: one `Budget`, updated by each step and recorded at each
held-out evaluation (`eval.jsonl`'s `budget_*` columns), after every step (`budget.jsonl`) and in the
final metrics (`<stage>/budget/*`).

    samples    completions generated for training (RL's rollouts, online DPO's rounds)
    tokens     the tokens of those completions
    updates    optimizer steps taken (one skipped for a non-finite loss is not counted)
    flops      training FLOPs, estimated as below
    wall_time  seconds spent in training steps (the stages' timers); evaluations left out

FLOPs follow Kaplan et al. 2020 ("Scaling laws for neural language models", §2.1): a forward pass
costs about 2·N FLOPs per token it processes, and a forward and backward pass 6·N (the "6N rule"),
with N the parameters that multiply activations (`matmul_params`: every weight but the input
embeddings; the output layer counted, tied to them or not). Each stage lists the passes its training
makes (the policy's generation, fresh and trained passes, the reference, the reward model, the critic:
`stages/rl/metrics.py`, `stages/dpo/metrics.py`), each over its sequences' prompt and completion tokens.
Left out: attention's 2·n_layer·n_ctx·d_attn per token (small beside 2N at these context lengths),
padding, the held-out evaluations, the gold scorer (a measurement, not training), the upstream stages
(SFT, collect, reward-model training); a LoRA backward is counted as a full one. It is an estimate to
match arms by, not a measurement of a machine.

samples, tokens, updates and flops are counts: the same in a rerun and in a resumed run, so they sit in
`eval.jsonl` (which a resumed run reproduces bitwise); wall time differs run to run and sits in
`budget.jsonl` only, which also lets a resumed run restore the budget of its checkpointed step.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from torch import nn

log = logging.getLogger(__name__)
BUDGET = "budget.jsonl"  # the budget after every step of a training run, in its artifact's folder
AXES = ("samples", "tokens", "updates", "flops", "wall_time")  # what a comparison can be matched on
COUNTS = AXES[:4]  # reproducible: in eval.jsonl as budget_<name>
FORWARD, FORWARD_BACKWARD = 2, 6  # FLOPs per parameter per token (Kaplan et al. 2020)


@dataclasses.dataclass
class Budget:
    """Totals since the run's step 0."""

    samples: int = 0
    tokens: int = 0
    updates: int = 0
    flops: int = 0
    wall_time: float = 0.0

    def spend(self, samples=0, tokens=0, updates=0, flops=0, seconds=0.0) -> None:
        self.samples += samples
        self.tokens += tokens
        self.updates += updates
        self.flops += flops
        self.wall_time += seconds

    def counts(self) -> dict[str, int]:
        """The reproducible totals (wall time aside)."""
        return {k: getattr(self, k) for k in COUNTS}


def flops(params: int, tokens: int, trained: bool = False) -> int:
    """2·N·tokens for a forward pass, 6·N·tokens for a forward and backward pass (Kaplan et al. 2020)."""
    return (FORWARD_BACKWARD if trained else FORWARD) * params * tokens


def matmul_params(model: nn.Module | None) -> int:
    """N of the 6N rule: the parameters that multiply activations, i.e. all but the input embeddings
    (a lookup), with the output layer counted even when it shares the input embeddings' weight. 0 for
    None."""
    if model is None:
        return 0
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    tied = {id(output.weight)} if output is not None else set()
    lookups = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)} - tied
    return sum(p.numel() for p in model.parameters() if id(p) not in lookups)


def scorer_params(scorer) -> int:
    """N of the models a scorer runs: a reward model's (`.model`), an ensemble's members' (`.members`)
    summed; 0 for a rule (a world gold, length, keywords) or None."""
    model = getattr(scorer, "model", None)
    if isinstance(model, nn.Module):
        return matmul_params(model)
    return sum(scorer_params(m) for m in getattr(scorer, "members", ()))


# ------------------------------------------------------------------------------------ budget.jsonl
def append(path: Path, step: int, budget: Budget) -> None:
    """One row: the budget after `step`."""
    with open(path, "a") as f:
        f.write(json.dumps({"step": step} | dataclasses.asdict(budget)) + "\n")


def read(path: Path) -> dict[int, dict]:
    """step -> the budget after it (the AXES), from a budget.jsonl; {} when there is none."""
    if not Path(path).is_file():
        return {}
    rows = [json.loads(line) for line in Path(path).read_text().splitlines()]
    return {row["step"]: {k: row[k] for k in AXES} for row in rows}


def restore(path: Path, step: int) -> Budget:
    """The budget after `step` of a resumed run, the rows after it dropped (the run redoes them)."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines()] if path.is_file() else []
    kept = [row for row in rows if row["step"] <= step]
    path.write_text("".join(json.dumps(row) + "\n" for row in kept))
    last = next((row for row in kept if row["step"] == step), None)
    if last is None:  # a checkpoint written before budgets were recorded
        log.warning("%s holds no budget of step %d: the budget counts from the resumed step", path, step)
        return Budget()
    return Budget(**{k: last[k] for k in AXES})
