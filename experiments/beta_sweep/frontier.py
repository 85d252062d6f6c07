"""Does the KL penalty move the gold-vs-KL frontier? For each penalized run (β > 0), its final gold
against the gold that the unpenalized run of the same seed had reached at the same KL (interpolated
along that run's evaluations up to its gold peak); mean ± 95% interval over seeds per β.

    python experiments/beta_sweep/frontier.py /work/lab/runs/multirun/overoptimization
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from rlhf_lab.report.fitting import format_interval
from rlhf_lab.report.runs import find_runs


def completed_runs(root: Path):
    return [run for run in find_runs(root) if run.status == "completed"]


def evaluations(root: Path) -> dict[tuple[str, str], list[dict]]:
    """(β, seed) -> the RL run's evaluations, for every job of the multirun."""
    runs = {}
    for run in completed_runs(root):
        rows = [json.loads(line) for line in open(Path(run.artifacts["rl"]) / "eval.jsonl")]
        runs[(run.overrides["algo.kl.beta"], run.overrides["rl.seed"])] = rows
    return runs


def gold_at(evals: list[dict], kl: float) -> float:
    """Gold of a run at `kl`, interpolated along its evaluations up to its gold peak."""
    peak = max(range(len(evals)), key=lambda i: evals[i]["gold"])
    points = sorted((e["kl"], e["gold"]) for e in evals[: peak + 1])
    return float(np.interp(kl, [p[0] for p in points], [p[1] for p in points]))


def main(root: Path) -> None:
    runs = evaluations(root)
    print("| β | seed | final KL | final gold | β = 0 at that KL | difference |")
    print("|---|---|---:|---:|---:|---:|")
    for beta in sorted({b for b, _ in runs if float(b) > 0}, key=float):
        diffs = []
        for seed in sorted(s for b, s in runs if b == beta):
            end = runs[(beta, seed)][-1]
            free = gold_at(runs[("0", seed)], end["kl"])
            diffs.append(end["gold"] - free)
            print(
                f"| {beta} | {seed} | {end['kl']:.1f} | {end['gold']:.3f} | {free:.3f} | {diffs[-1]:+.3f} |"
            )
        print(f"| {beta} | mean ± 95% | | | | {format_interval(diffs)} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
