"""Label noise: per labeler, the reward model's held-out accuracy against its labels' ceiling, its
agreement with the gold ordering, and where RL against it puts the gold peak. Mean ± 95% interval over
seeds (`reward_model.seed`, RL's tied to it). Takes the two multiruns of the experiment (BT temperatures;
argmax, flip and pool):

    python experiments/label_noise/table.py /work/lab/runs/multirun/label_noise_bt \
        /work/lab/runs/multirun/label_noise_kinds

Writes `label_noise.csv` (one row per run) and prints the Markdown table.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from rlhf_lab.report.rm import run_row, table
from rlhf_lab.report.runs import Run, find_runs

HERE = Path(__file__).resolve().parent
ORDER = ["argmax", "bt ceiling 0.8", "flip ε 0.2", "bt ceiling 0.7", "pool"]


def labeler_name(run: Run) -> str:
    labeler = run.config["labeler"]
    if labeler["kind"] == "bt":
        return f"bt ceiling {labeler['ceiling']}"
    if labeler["kind"] == "flip":
        return f"flip ε {labeler['epsilon']}"
    return labeler["kind"]


def main(roots: list[Path]) -> None:
    runs = [run for root in roots for run in find_runs(root) if run.status == "completed"]
    rows = [
        {"labeler": labeler_name(run), "seed": int(run.overrides["reward_model.seed"])} | run_row(run)
        for run in runs
    ]
    rank = {name: i for i, name in enumerate(ORDER)}
    rows.sort(key=lambda r: (rank.get(r["labeler"], len(ORDER)), r["seed"]))
    with open(HERE / "label_noise.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(max(rows, key=len)), restval="")
        writer.writeheader()
        writer.writerows(rows)
    print(table(rows, lambda r: r["labeler"], "labeler"))


if __name__ == "__main__":
    main([Path(p) for p in sys.argv[1:]])
