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
import sys
from pathlib import Path

import numpy as np

from rlhf_lab.report.fitting import format_interval
from rlhf_lab.report.rm import run_row, table
from rlhf_lab.report.runs import find_runs

HERE = Path(__file__).resolve().parent


def main(root: Path) -> None:
    rows = [
        {"prompts": int(run.overrides["collect.num_prompts"])}
        | {"seed": int(run.overrides["reward_model.seed"])}
        | run_row(run)
        for run in find_runs(root)
        if run.status == "completed"
    ]
    rows.sort(key=lambda r: (r["prompts"], r["seed"]))
    with open(HERE / "rm_data_size.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(max(rows, key=len)), restval="")
        writer.writeheader()
        writer.writerows(rows)
    print(table(rows, lambda r: str(r["prompts"]), "prompts"))
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
