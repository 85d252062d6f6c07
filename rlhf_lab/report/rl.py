"""RL runs side by side, for the policy-gradient ablations (experiments/pg_family, ppo_details, lora_rank):
per configuration, mean ± 95% t-interval over seeds of the final held-out gold, its gain over SFT, the
KL to the reference, the win rate, the samples' length in tokens, the RL steps' wall time, the RL
stage's peak memory, what training added to the memory it started with, and the memory its weights and
optimizer state hold; and, seed by seed, each configuration's difference from a baseline configuration
(runs of the same `rl.seed` share the SFT policy, the reward model and the prompt order).

    python -m rlhf_lab.report.rl <multirun folder> [--baseline LABEL] [--out DIR]

Writes `runs.csv` (one row per completed run), `summary.md` (the tables) and `gold_vs_kl.png` (final gold
against KL, one point per configuration with its seed intervals) to DIR (default: `<folder>/report_rl`).
A configuration is what `rlhf-lab-report` calls one: the overrides that vary across runs, seeds left out.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

from rlhf_lab import plots
from rlhf_lab.report.fitting import format_interval, mean_interval
from rlhf_lab.report.runs import Run, find_runs

# The RL stage's peak memory minus its memory when it started: what training added. A multirun's jobs
# share processes (one with the basic launcher, a few joblib workers with local_parallel), and memory an
# earlier job freed is not always returned to the system, so the peak alone carries the job's history.
ADDED = "rl/train/memory/added_mb"
COLUMNS = {  # metric: (header, digits)
    "rl/eval/gold": ("gold", 3),
    "rl/eval/gold_gain": ("gain over SFT", 3),
    "rl/eval/kl": ("KL (nats)", 1),
    "rl/eval/win_rate": ("win rate", 2),
    "rl/eval/length": ("length", 1),
    "rl/train/time/total": ("RL steps (s)", 0),
    "rl/train/memory/peak_mb": ("peak MB", 0),
    ADDED: ("added MB", 0),
    "rl/train/memory/weights_mb": ("weights MB", 1),
}
PAIRED = ["rl/eval/gold", "rl/eval/kl", "rl/train/time/total", ADDED]


def configurations(root: Path) -> dict[str, list[Run]]:
    """The completed runs below `root` by configuration label, in the order they were launched."""
    groups: dict[str, list[Run]] = defaultdict(list)
    for run in find_runs(root):
        if run.status == "completed":
            m = run.metrics
            if "rl/train/memory/peak_mb" in m and "rl/train/memory/at_start_mb" in m:
                m[ADDED] = m["rl/train/memory/peak_mb"] - m["rl/train/memory/at_start_mb"]
            groups[run.label].append(run)
    return dict(groups)


def _seed(run: Run) -> str:
    return run.overrides.get("rl.seed", str(run.config.get("seed")))


def table(groups: dict[str, list[Run]]) -> str:
    """Mean ± 95% interval over seeds of every column, one row per configuration (Markdown)."""
    lines = [
        "| configuration | seeds | " + " | ".join(header for header, _ in COLUMNS.values()) + " |",
        "|---|---:|" + "---:|" * len(COLUMNS),
    ]
    for label, runs in groups.items():
        cells = [
            format_interval([r.metrics[m] for r in runs if m in r.metrics], digits)
            for m, (_, digits) in COLUMNS.items()
        ]
        lines.append(f"| {label} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def paired(groups: dict[str, list[Run]], baseline: str) -> str:
    """Each configuration minus `baseline`, seed by seed (only the seeds both ran): mean ± 95% interval
    of the differences, and how many seeds went each way (Markdown)."""
    base = {_seed(r): r.metrics for r in groups[baseline]}
    headers = [COLUMNS[m][0] for m in PAIRED]
    lines = [
        f"Differences from `{baseline}`, paired by seed (mean ± 95% interval; seeds above / below 0):",
        "",
        "| configuration | seeds | " + " | ".join(f"Δ {h}" for h in headers) + " |",
        "|---|---:|" + "---:|" * len(PAIRED),
    ]
    for label, runs in groups.items():
        if label == baseline:
            continue
        pairs = [(r.metrics, base[_seed(r)]) for r in runs if _seed(r) in base]
        cells = []
        for m in PAIRED:
            diffs = [a[m] - b[m] for a, b in pairs if m in a and m in b]
            up, down = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
            cells.append(f"{format_interval(diffs, COLUMNS[m][1])} ({up}/{down})")
        lines.append(f"| {label} | {len(pairs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_runs(groups: dict[str, list[Run]], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["configuration", "rl.seed", *COLUMNS, "run"])
        for label, runs in groups.items():
            for r in runs:
                writer.writerow([label, _seed(r), *(r.metrics.get(m, "") for m in COLUMNS), str(r.path)])


def plot_gold_vs_kl(groups: dict[str, list[Run]], path: Path) -> Path:
    """Final gold against KL, one point per configuration with its 95% intervals on both axes."""
    fig, ax = plots.subplots(figsize=(7, 5))
    for label, runs in groups.items():
        kl, kl_half = mean_interval([r.metrics.get("rl/eval/kl") for r in runs])
        gold, gold_half = mean_interval([r.metrics.get("rl/eval/gold") for r in runs])
        ax.errorbar(kl, gold, xerr=kl_half, yerr=gold_half, fmt="o", capsize=3, label=label)
    ax.set_xlabel("KL to the reference (nats)")
    ax.set_ylabel("held-out gold")
    ax.set_title("final gold against KL, mean ± 95% interval over seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return plots.save(fig, path)


def report(root: Path, out: Path | None = None, baseline: str | None = None) -> str:
    """Write runs.csv, summary.md and gold_vs_kl.png for the runs below `root`; return the Markdown."""
    groups = configurations(root)
    if not groups:
        raise SystemExit(f"no completed runs below {root}")
    out = Path(out or Path(root) / "report_rl")
    out.mkdir(parents=True, exist_ok=True)
    markdown = "Mean ± 95% t-interval over seeds (the value alone for one seed).\n\n" + table(groups)
    if baseline is not None:
        if baseline not in groups:
            raise SystemExit(f"--baseline {baseline!r} is not one of: {', '.join(groups)}")
        markdown += "\n" + paired(groups, baseline)
    write_runs(groups, out / "runs.csv")
    (out / "summary.md").write_text(markdown)
    plot_gold_vs_kl(groups, out / "gold_vs_kl.png")
    return markdown


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="a multirun folder (or a run folder)")
    parser.add_argument("--baseline", help="the configuration the others are compared with, seed by seed")
    parser.add_argument("--out", type=Path, help="where to write (default: <root>/report_rl)")
    args = parser.parse_args(argv)
    print(report(args.root, args.out, args.baseline))


if __name__ == "__main__":
    main()
