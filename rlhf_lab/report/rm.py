"""Reward-model tables of a multirun: per run, the reward model's held-out accuracy against its labels'
ceiling, its agreement with the gold ordering, and where RL against it put the gold peak; per
configuration, mean ± 95% interval over seeds. The experiments on the reward model's data (size, label
noise) print their tables with it.

The ceiling is the best accuracy any model can expect against the labels:
    bt      E[σ(|g_a − g_b| / T)] on the model's own validation pairs (`reward/val/bt_ceiling`)
    argmax  1 (gold ties are dropped)
    flip    1 − ε on the pairs argmax labels
    pool    E[max(p, 1 − p)] of each pair's label probability, over all collected pairs
    file    unknown
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from rlhf_lab.artifacts import read_manifest
from rlhf_lab.report.fits import read_evals, signature
from rlhf_lab.report.fitting import format_interval
from rlhf_lab.report.runs import Run

COLUMNS = [
    "pairs",
    "accuracy",
    "ceiling",
    "accuracy_minus_ceiling",
    "gold_agreement",
    "start_gold",
    "peak_gold",
    "peak_kl",
    "peak_step",
    "end_gold",
    "gold_drop_to_end",
    "proxy_rise",
]
DIGITS = {"pairs": 0, "peak_kl": 1, "peak_step": 0}  # the others: 3


def label_ceiling(labeler: dict, collect: dict, reward: dict) -> float | None:
    """The best expected accuracy against this labeler's labels (see the module docstring)."""
    kind = labeler.get("kind")
    if kind == "bt":
        return reward.get("reward/val/bt_ceiling")
    if kind == "argmax":
        return 1.0
    if kind == "flip":
        return 1.0 - float(labeler["epsilon"])
    if kind == "pool":
        return collect.get("collect/label_ceiling")
    return None


def run_row(run: Run) -> dict:
    """One run's reward-model metrics, with its RL gold peak when the run went on to RL."""
    reward = read_manifest(Path(run.artifacts["reward"]))["metrics"]
    collect = read_manifest(Path(run.artifacts["collect"]))["metrics"]
    ceiling = label_ceiling(run.config.get("labeler", {}), collect, reward)
    accuracy = reward["reward/val/accuracy"]
    row = {
        "pairs": collect.get("collect/pairs"),
        "accuracy": accuracy,
        "ceiling": ceiling,
        "accuracy_minus_ceiling": None if ceiling is None else accuracy - ceiling,
        "gold_agreement": reward.get("reward/val/gold_accuracy"),
    }
    if "rl" in run.artifacts:  # where RL against this reward model put the gold peak
        row |= signature(read_evals(run.artifacts["rl"], log=lambda: {}))
    return row


def table(rows: list[dict], key: Callable[[dict], str], name: str) -> str:
    """A Markdown table: one line per configuration (`key` of a row), mean ± 95% interval over its seeds."""
    groups = defaultdict(list)
    for row in rows:
        groups[key(row)].append(row)
    columns = [c for c in COLUMNS if any(c in r for r in rows)]
    lines = [
        f"| {name} | seeds | " + " | ".join(c.replace("_", " ") for c in columns) + " |",
        "|---|---:|" + "---:|" * len(columns),
    ]
    for label, group in groups.items():
        cells = [format_interval([r.get(c) for r in group], DIGITS.get(c, 3)) for c in columns]
        lines.append(f"| {label} | {len(group)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
