"""The report's reward–KL frontier (Rafailov et al. 2023, Fig. 2): final held-out gold against KL to the
starting policy, for every method a sweep holds — DPO and its variants over β, RL over β, best-of-n
over n — as frontier.csv, frontier.md and frontier.png.

`rlhf_lab.report` hands over its runs. A DPO run gives one point (`dpo/eval/gold`, `dpo/eval/kl`: the
exact KL to the reference on held-out samples), an RL run one point (`rl/eval/gold`, `rl/eval/kl`), a
best-of-n run one point per n (`bon/n<n>/gold`, and KL = log n − (n−1)/n). The runs of a point that
differ only in their seeds are pooled: mean ± 95% t-interval over seeds, of gold and of KL.
"""

from __future__ import annotations

import csv
import math
import re
from collections import defaultdict
from pathlib import Path

from rlhf_lab import plots
from rlhf_lab.report import fitting

HEADLINE = ["dpo/eval/gold", "dpo/eval/kl", "dpo/eval/win_rate", "dpo/eval/gold_gain", "dpo/val/accuracy"]
DPO_PAPER_BETA = {
    "simpo": 2.0
}  # dpo.beta=null takes the loss's paper value (config.DPOConfig): 0.1 otherwise


def points(runs) -> dict[tuple[str, float], list[tuple[float, float]]]:
    """(method, β or n) -> [(KL, gold)], one per completed run (or per n of a best-of-n run)."""
    found: dict[tuple[str, float], list[tuple[float, float]]] = defaultdict(list)
    for run in runs:
        if run.status != "completed":
            continue
        m, config = run.metrics, run.config
        if "dpo/eval/kl" in m and "dpo/eval/gold" in m:
            dpo = config.get("dpo", {})
            loss = dpo.get("loss", "dpo")
            beta = dpo.get("beta") or DPO_PAPER_BETA.get(loss, 0.1)
            rounds = dpo.get("rounds", 1)
            method = f"DPO ({loss}{f', online x{rounds}' if rounds > 1 else ''})"
            found[(method, float(beta))].append((m["dpo/eval/kl"], m["dpo/eval/gold"]))
        elif "rl/eval/kl" in m and "rl/eval/gold" in m:
            algo = config.get("algo", {})
            method = f"RL ({algo.get('name', '?')}, {config.get('objective', {}).get('kind', '?')})"
            found[(method, float(algo.get("kl", {}).get("beta", math.nan)))].append(
                (m["rl/eval/kl"], m["rl/eval/gold"])
            )
        for key, gold in m.items():  # best-of-n: bon/n<n>/gold
            if (hit := re.fullmatch(r"bon/n(\d+)/gold", key)) and f"bon/n{hit[1]}/kl" in m:
                found[("best-of-n", float(hit[1]))].append((m[f"bon/n{hit[1]}/kl"], gold))
    return found


def table(runs) -> list[dict]:
    """One row per (method, β or n): seeds, KL and gold as mean and 95% half-width."""
    rows = []
    for (method, param), values in sorted(points(runs).items()):
        kl = fitting.mean_interval([v[0] for v in values])
        gold = fitting.mean_interval([v[1] for v in values])
        rows.append(
            {
                "method": method,
                "param": "n" if method == "best-of-n" else "β",
                "value": param,
                "seeds": len(values),
                "kl": kl[0],
                "kl_ci": kl[1],
                "gold": gold[0],
                "gold_ci": gold[1],
            }
        )
    return rows


def write_frontier(runs, out: Path) -> str:
    """frontier.csv, frontier.md and frontier.png when the runs hold a DPO, RL or best-of-n point;
    returns the Markdown ('' when there is none)."""
    rows = table(runs)
    if not rows:
        return ""
    with open(out / "frontier.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "Reward–KL frontier (Rafailov 2023, Fig. 2): final held-out gold against KL(π ‖ π_SFT) in nats "
        "(DPO, RL: exact, on held-out samples; best-of-n: log n − (n−1)/n); mean ± 95% t-interval over "
        "seeds.",
        "",
        "| method | β or n | seeds | KL | gold |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        kl, gold = _cell(r["kl"], r["kl_ci"]), _cell(r["gold"], r["gold_ci"])
        lines.append(f"| {r['method']} | {r['param']}={r['value']:g} | {r['seeds']} | {kl} | {gold} |")
    plot(rows, out / "frontier.png")
    text = "\n" + "\n".join(lines) + f"\n\nplot: {out / 'frontier.png'}\n"
    (out / "frontier.md").write_text(text)
    return text


def _cell(mean: float, half: float) -> str:
    return f"{mean:.3f}" if math.isnan(half) else f"{mean:.3f} ± {half:.3f}"


def plot(rows: list[dict], path: Path) -> Path:
    """Gold against KL, one line per method through its β (or n) values; error bars: 95% intervals."""
    fig, ax = plots.subplots(figsize=(6.5, 4.5))
    methods = sorted({r["method"] for r in rows})
    for i, method in enumerate(methods):
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["kl"])
        ax.errorbar(
            [r["kl"] for r in mine],
            [r["gold"] for r in mine],
            xerr=[0 if math.isnan(r["kl_ci"]) else r["kl_ci"] for r in mine],
            yerr=[0 if math.isnan(r["gold_ci"]) else r["gold_ci"] for r in mine],
            fmt="s--" if method == "best-of-n" else "o-",
            color="gray" if method == "best-of-n" else f"C{i}",
            capsize=3,
            label=method,
        )
        for r in mine:
            ax.annotate(
                f"{r['param']}={r['value']:g}",
                (r["kl"], r["gold"]),
                textcoords="offset points",
                xytext=(4, -10),
                fontsize=7,
            )
    ax.set_xlabel("KL(π ‖ π_SFT)  [nats]")
    ax.set_ylabel("gold reward (held-out)")
    ax.set_title("Reward–KL frontier: mean ± 95% interval over seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return plots.save(fig, path)
