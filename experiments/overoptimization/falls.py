"""How the gold falls after its peak, under the reader gold and under the careful gold, on the same texts.

    python experiments/overoptimization/falls.py lab/runs/multirun/overoptimization

The runs trained against a proxy learned from reader-gold labels; every held-out evaluation's samples
(`eval_history.jsonl`) are scored here by both golds, sample by sample, so the two golds judge identical
texts and differ only in how they judge. Per run and gold: the peak, the trough after it, the end; the
fall from the peak to the trough; `cliff`, the share of that fall taken in the single steepest interval
between two evaluations (1: all at once); `floor`, the share of the last evaluation's samples at the
gold's floor (≤ −0.99); `levels`, the distinct scores (to 0.01) among them. Then reader − careful,
paired by seed, with Holm over the comparisons (`rlhf_lab.report.stats`).

Writes `falls.csv` (one row per run and gold) and `falls_curves.csv` (per run, step and gold: the mean
score and the floor share) beside this script, and prints the tables of the write-up.
"""

from __future__ import annotations

import statistics
import sys
from collections import defaultdict
from pathlib import Path

import torch

from rlhf_lab.evaluation import EVAL_HISTORY, EVALS
from rlhf_lab.protocol.curves import write_csv
from rlhf_lab.report import stats
from rlhf_lab.report.rescore import build_scorers, read_jsonl
from rlhf_lab.report.runs import find_runs

HERE = Path(__file__).resolve().parent
GOLDS = ("reader", "careful")
FLOOR = -0.99


def curve(artifact: Path, scorers) -> list[dict]:
    """Per evaluation step: each gold's mean and floor share over the step's samples, with the KL."""
    by_step: dict[int, list[dict]] = defaultdict(list)
    for row in read_jsonl(artifact / EVAL_HISTORY):
        by_step[row["step"]].append(row)
    kl = {row["step"]: row["kl"] for row in read_jsonl(artifact / EVALS)}
    rows = []
    for step, samples in sorted(by_step.items()):
        prompts, completions = [s["prompt"] for s in samples], [s["completion"] for s in samples]
        for gold, scorer in scorers.items():
            with torch.no_grad():
                scores = scorer.score(prompts, completions)  # (B,)
            rows.append(
                {
                    "step": step,
                    "kl": kl[step],
                    "gold": gold,
                    "mean": scores.mean().item(),
                    "floor": (scores <= FLOOR).float().mean().item(),
                    "levels": len({round(s, 2) for s in scores.tolist()}),
                }
            )
    return rows


def fall(points: list[dict]) -> dict:
    """The signature of one gold's curve (rows in step order)."""
    means = [p["mean"] for p in points]
    peak = max(range(len(means)), key=means.__getitem__)
    trough = min(range(peak, len(means)), key=means.__getitem__)
    drop = means[peak] - means[trough]
    steepest = max((means[i] - means[i + 1] for i in range(peak, trough)), default=0.0)
    return {
        "peak_step": points[peak]["step"],
        "peak_kl": points[peak]["kl"],
        "peak": means[peak],
        "trough_step": points[trough]["step"],
        "trough": means[trough],
        "end": means[-1],
        "drop": drop,
        "cliff": steepest / drop if drop > 0 else 0.0,
        "floor": points[-1]["floor"],
        "levels": points[-1]["levels"],
    }


def main(root: Path) -> None:
    scorers = build_scorers(list(GOLDS))
    curves, falls = [], []
    for run in (r for r in find_runs(root) if r.status == "completed"):
        seed = int(run.overrides["rl.seed"])
        rows = curve(Path(run.artifacts["rl"]), scorers)
        curves += [{"seed": seed} | r for r in rows]
        for gold in GOLDS:
            falls.append({"seed": seed, "gold": gold} | fall([r for r in rows if r["gold"] == gold]))
    write_csv(HERE / "falls_curves.csv", curves, ("seed", "step", "kl", "gold"))
    write_csv(HERE / "falls.csv", falls, ("seed", "gold"))
    report(falls)


def report(falls: list[dict]) -> None:
    columns = ["peak_step", "peak", "trough", "end", "drop", "cliff", "floor", "levels"]
    print("| gold | seeds | " + " | ".join(columns) + " |")
    print("|---|---:|" + "---:|" * len(columns))
    for gold in GOLDS:
        rows = [f for f in falls if f["gold"] == gold]
        cells = []
        for c in columns:
            d = stats.mean_difference([r[c] for r in rows])
            cells.append(f"{d.mean:.3f} ± {d.half:.3f}")
        print(f"| {gold} | {len(rows)} | " + " | ".join(cells) + " |")
    by_gold = {g: {f["seed"]: f for f in falls if f["gold"] == g} for g in GOLDS}
    seeds = sorted(by_gold["reader"])
    compared = {
        f"reader − careful: {c}": (
            [by_gold["reader"][s][c] for s in seeds],
            [by_gold["careful"][s][c] for s in seeds],
        )
        for c in ("end", "cliff", "floor")
    }
    print("\n" + stats.markdown_table(stats.compare(compared)))
    levels = statistics.fmean(r["levels"] for r in falls)
    print(f"\nmean levels among the last evaluation's samples: {levels:.1f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
