"""DPO against PPO at matched KL, paired by seed: does DPO's frontier lie above PPO's?

    python experiments/dpo_vs_ppo/paired.py <report folder>/runs.csv [--out experiments/dpo_vs_ppo/paired.md]

`runs.csv` is `rlhf-lab-report`'s, of the folder that `run.sh` fills. A seed s of either method
evaluates on the same 128 held-out prompts (the SFT gold of seed s is the same for both), so the two
methods can be compared seed by seed. Each DPO β is paired with the PPO β whose mean KL is the nearest
at or below its own (PPO spending no more divergence), or the nearest above when there is none; the table
gives both KLs and the per-seed difference in gold, PPO − DPO, as mean ± 95% t-interval over seeds.
"""

from __future__ import annotations

import argparse
import csv
import statistics
from collections import defaultdict
from pathlib import Path

from rlhf_lab.report.fitting import format_interval

METHODS = {"dpo": ("dpo.beta", "dpo.seed", "dpo/eval"), "rl": ("algo.kl.beta", "rl.seed", "rl/eval")}


def read_points(path: Path) -> dict[tuple[str, str], dict[str, tuple[float, float]]]:
    """(method, β) -> {seed: (KL, gold)} for the DPO and PPO runs of `path`."""
    points: dict[tuple[str, str], dict[str, tuple[float, float]]] = defaultdict(dict)
    with open(path) as f:
        for row in csv.DictReader(f):
            if row["status"] != "completed" or row["stage"] not in METHODS:
                continue
            beta, seed, prefix = METHODS[row["stage"]]
            points[(row["stage"], row[beta])][row[seed]] = (
                float(row[f"{prefix}/kl"]),
                float(row[f"{prefix}/gold"]),
            )
    return points


def partner(dpo_kl: float, ppo: dict[str, float]) -> str:
    """The PPO β whose mean KL is the nearest at or below `dpo_kl` (else the nearest above)."""
    below = {beta: kl for beta, kl in ppo.items() if kl <= dpo_kl}
    pool = below or ppo
    return min(pool, key=lambda beta: abs(pool[beta] - dpo_kl))


def table(points) -> list[str]:
    mean_kl = {key: statistics.fmean(kl for kl, _ in seeds.values()) for key, seeds in points.items()}
    ppo = {beta: kl for (method, beta), kl in mean_kl.items() if method == "rl"}
    lines = [
        "| DPO β | DPO KL | PPO β | PPO KL | seeds | gold, PPO − DPO (paired by seed) |",
        "|---|---|---|---|---|---|",
    ]
    for (method, beta), seeds in sorted(points.items(), key=lambda item: -mean_kl[item[0]]):
        if method != "dpo" or not ppo:
            continue
        other = partner(mean_kl[(method, beta)], ppo)
        shared = sorted(set(seeds) & set(points[("rl", other)]))
        diffs = [points[("rl", other)][s][1] - seeds[s][1] for s in shared]
        lines.append(
            f"| {beta} | {mean_kl[(method, beta)]:.1f} | {other} | {ppo[other]:.1f} | {len(shared)} | "
            f"{format_interval(diffs, 3)} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="rlhf-lab-report's runs.csv of the experiment's folder")
    parser.add_argument("--out", type=Path, help="also write the table here")
    args = parser.parse_args()
    text = "\n".join(table(read_points(args.runs))) + "\n"
    print(text, end="")
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
