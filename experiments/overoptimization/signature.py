"""The overoptimization signature of each configuration of a multirun: per seed, the gold peak along
RL training (its step, KL, gold and proxy), the trough after it (the lowest gold after the peak) and
the end (the last evaluation); then mean ± 95% interval over seeds per configuration.

    python experiments/overoptimization/signature.py /work/lab/runs/multirun/overoptimization

Writes `signature.csv` (one row per run) and `curves.csv` (every run's held-out evaluations, its
eval.jsonl: the raw curves every table is computed from), and prints a Markdown table (one row per
configuration).
"""

from __future__ import annotations

import csv
import sys
from collections import defaultdict
from pathlib import Path

from rlhf_lab.protocol.curves import write_csv
from rlhf_lab.report import stats
from rlhf_lab.report.fits import read_evals, signature
from rlhf_lab.report.fitting import format_interval
from rlhf_lab.report.runs import Run, find_runs

HERE = Path(__file__).resolve().parent
SEEDS = ("seed", "rl.seed", "bon.seed", "reward_model.seed", "collect.seed")


def run_row(run: Run) -> dict:
    config = " ".join(f"{k}={v}" for k, v in sorted(run.overrides.items()) if k not in SEEDS)
    seed = " ".join(f"{k}={v}" for k, v in sorted(run.overrides.items()) if k in SEEDS)
    evals = read_evals(run.artifacts["rl"], log=lambda: {})
    return {"configuration": config or "default", "seed": seed} | signature(evals)


def main(root: Path) -> None:
    runs = [run for run in find_runs(root) if run.status == "completed"]
    curves = [
        {"configuration": run_row(run)["configuration"], "seed": run_row(run)["seed"]} | e
        for run in runs
        for e in read_evals(run.artifacts["rl"], log=lambda: {})
    ]
    write_csv(HERE / "curves.csv", curves, ("configuration", "seed", "step"))
    rows = [run_row(run) for run in runs]
    with open(HERE / "signature.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    groups = defaultdict(list)
    for row in rows:
        groups[row["configuration"]].append(row)
    columns = [
        "peak_kl",
        "peak_gold",
        "trough_kl",
        "trough_gold",
        "end_gold",
        "gold_drop",
        "gold_drop_to_end",
        "proxy_rise",
    ]
    print("| configuration | seeds | " + " | ".join(columns) + " |")
    print("|---|---:|" + "---:|" * len(columns))
    for config, group in groups.items():
        cells = [format_interval([r[c] for r in group]) for c in columns]
        print(f"| {config} | {len(group)} | " + " | ".join(cells) + " |")
    for config, group in groups.items():  # the signature's three parts against 0, Holm over the three
        parts = {
            "gold gain from the start to the peak": [r["peak_gold"] - r["start_gold"] for r in group],
            "gold fall from the peak to the trough": [r["gold_drop"] for r in group],
            "proxy rise from the gold peak to the end": [r["proxy_rise"] for r in group],
        }
        print(f"\n{config}, against 0 (paired t, Holm over 3):\n")
        for c in stats.compare({name: (v, [0.0] * len(v)) for name, v in parts.items()}):
            print(f"- {c}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
