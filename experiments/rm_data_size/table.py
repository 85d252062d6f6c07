"""Reward-model data size: per size, the reward model's held-out accuracy, the Bradley–Terry ceiling of
its validation pairs, their difference, agreement with the gold ordering, and where RL against that
model puts its gold peak; per seed, the accuracy points gained per doubling of the data (a least-squares
slope against log2 of the pairs). Mean ± 95% interval over seeds (`reward_model.seed`, RL's tied to it).

    python experiments/rm_data_size/table.py /work/lab/runs/multirun/rm_data_size

Writes `rm_data_size.csv` (one row per run) and prints Markdown tables; the RL columns where the runs
went on to RL (`stage=rl`), the reward-model columns alone for a `stage=reward` multirun.
"""

from __future__ import annotations

import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from rlhf_lab.artifacts import read_manifest
from rlhf_lab.fits import format_interval
from rlhf_lab.report import Run, find_runs

HERE = Path(__file__).resolve().parent


def run_row(run: Run) -> dict:
    overrides, artifacts = run.overrides, run.artifacts
    reward = read_manifest(Path(artifacts["reward"]))["metrics"]
    collect = read_manifest(Path(artifacts["collect"]))["metrics"]
    row = {
        "prompts": int(overrides["collect.num_prompts"]),
        "seed": int(overrides["reward_model.seed"]),
        "pairs": collect.get("collect/pairs"),
        "accuracy": reward["reward/val/accuracy"],
        "ceiling": reward["reward/val/bt_ceiling"],
        "accuracy_minus_ceiling": reward["reward/val/accuracy"] - reward["reward/val/bt_ceiling"],
        "gold_agreement": reward["reward/val/gold_accuracy"],
    }
    if "rl" in artifacts:  # RL against this reward model: where its gold peaks
        evals = [json.loads(line) for line in open(Path(artifacts["rl"]) / "eval.jsonl")]
        peak = max(evals, key=lambda e: e["gold"])
        row |= {"peak_kl": peak["kl"], "peak_gold": peak["gold"], "start_gold": evals[0]["gold"]}
    return row


def main(root: Path) -> None:
    rows = [run_row(run) for run in find_runs(root) if run.status == "completed"]
    rows.sort(key=lambda r: (r["prompts"], r["seed"]))
    with open(HERE / "rm_data_size.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), restval="")
        writer.writeheader()
        writer.writerows(rows)
    by_size = defaultdict(list)
    for row in rows:
        by_size[row["prompts"]].append(row)
    columns = [
        "pairs",
        "accuracy",
        "ceiling",
        "accuracy_minus_ceiling",
        "gold_agreement",
        "peak_kl",
        "peak_gold",
    ]
    columns = [c for c in columns if c in rows[0]]
    print("| prompts | seeds | " + " | ".join(columns) + " |")
    print("|---:|---:|" + "---:|" * len(columns))
    for size, group in sorted(by_size.items()):
        cells = [format_interval([r[c] for r in group]) for c in columns]
        print(f"| {size} | {len(group)} | " + " | ".join(cells) + " |")
    slopes = []
    for seed in sorted({r["seed"] for r in rows}):
        mine = [r for r in rows if r["seed"] == seed]
        x = np.log2([r["pairs"] or r["prompts"] for r in mine])
        slopes.append(100 * np.polyfit(x, [r["accuracy"] for r in mine], 1)[0])
    print(
        f"\naccuracy points per doubling of the pairs: {format_interval(slopes, 2)} (per seed: "
        + ", ".join(f"{s:.2f}" for s in slopes)
        + ")"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
