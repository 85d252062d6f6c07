"""The report's fits: Gao et al. (2022)'s forms per configuration, as fits.csv, fits.md and fits.png.

`rlhf_lab.report` reads the runs and hands over, per configuration, each RL artifact's held-out
evaluations (step, kl, gold, reward) and its best-of-n artifacts (bon.json: n, kl, proxy, gold). Each
curve becomes R(d): d = √KL and R = the reward gained over its first point (RL: step 0; best-of-n:
n = 1), so R(0) = 0 as the forms require; `rlhf_lab.report.fitting` fits RL with d(α − β log d) and best-of-n
with d(α − β d), on gold and on proxy, with bootstrap intervals over seeds. Curves that do not start
at step 0 / n = 1 are left out, and fits.md says so.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rlhf_lab import plots
from rlhf_lab.report import fitting

REWARDS = {"gold": ("gold", "gold"), "proxy": ("reward", "proxy")}  # name -> key in eval.jsonl, bon.json
METHODS = {"rl": ("rl", "step", 0), "best-of-n": ("bon", "n", 1)}  # method -> form, x, its start
ESTIMATES = ("alpha", "beta", "r2", "d_star", "r_star")
HEADER = """\
Fits of Gao et al. (2022)'s forms with d = √KL and R the reward gained over the start (RL: step 0;
best-of-n: n = 1): best-of-n R = d(α − β·d), RL R = d(α − β·log d). Estimates on all seeds' points
pooled; [brackets]: bootstrap 95% intervals over seeds (resampling whole seeds: 3 seeds give only 10
distinct resamples; ∞: some resampled curves have no peak). The peak (d*, R*) exists for β > 0 (and
α > 0 for best-of-n); KL* = d*² in nats; †: beyond the largest d measured (max d), an extrapolation;
peaks: the share of resampled fits that have a peak.

| configuration | method | reward | seeds | α | β | R² | d* | KL* | R* | max d | peaks |
|---|---|---|---|---|---|---|---|---|---|---|---|"""


@dataclass
class CurveSet:
    """One configuration's curves of one method: per reward, each seed's {step or n: (d, R)}."""

    method: str  # "rl" | "best-of-n"
    label: str
    seeds: dict[str, list[dict[int, tuple[float, float]]]] = field(default_factory=dict)
    fits: dict[str, fitting.SeedFit] = field(default_factory=dict)


def fit_configurations(
    evals: dict[str, list[tuple[str, list[dict]]]], bon: dict[str, list[str]]
) -> tuple[list[CurveSet], list[str]]:
    """Curve sets, fitted, and notes on what was left out. evals: configuration -> [(RL artifact,
    its evaluations sorted by step)], one per seed; bon: configuration -> its best-of-n artifacts.
    Configurations that share their best-of-n artifacts share one best-of-n set."""
    notes: list[str] = []
    sets = [_curve_set("rl", label, sources, notes) for label, sources in evals.items()]
    shared: dict[tuple, list[str]] = {}
    for label, paths in bon.items():
        paths = [p for p in paths if (Path(p) / "bon.json").is_file()]
        if paths:
            shared.setdefault(tuple(sorted(set(paths))), []).append(label)
    for paths, labels in shared.items():
        tables = [(p, json.loads((Path(p) / "bon.json").read_text())) for p in paths]
        sets.append(_curve_set("best-of-n", ", ".join(labels), tables, notes))
    sets = [s for s in sets if s.seeds]
    for curves in sets:
        for reward, seeds in curves.seeds.items():
            points = [tuple(np.array(list(s.values())).T) for s in seeds]
            try:
                curves.fits[reward] = fitting.fit_seeds(METHODS[curves.method][0], points)
            except ValueError as error:
                notes.append(f"{curves.method} {curves.label} ({reward}): not fitted: {error}")
    return sets, notes


def read_evals(rl_artifact: str, log) -> list[dict]:
    """An RL run's held-out evaluations by step: eval.jsonl in its artifact (rl/metrics.py writes it),
    else the rl/eval/* metrics of its training log, `log()` -> {metric: [(step, value)]}."""
    path = Path(rl_artifact) / "eval.jsonl"
    if path.is_file():
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return sorted(rows, key=lambda row: row["step"])
    by_step: dict[int, dict] = {}
    for name, values in log().items():
        for step, value in values if name.startswith("rl/eval/") else []:
            by_step.setdefault(step, {})[name.removeprefix("rl/eval/")] = value
    return [{"step": step, **row} for step, row in sorted(by_step.items())]


def signature(evals: list[dict]) -> dict:
    """The overoptimization signature of one RL run's evaluations (step, kl, gold, reward = the proxy):
    the gold peak, the trough (the lowest gold after the peak) and the end, with how far gold falls
    after its peak (to the trough, to the end) and how far the proxy climbs after it."""
    peak = max(evals, key=lambda e: e["gold"])
    trough = min(evals[evals.index(peak) :], key=lambda e: e["gold"])
    end = evals[-1]
    points = {"start": evals[0], "peak": peak, "trough": trough, "end": end}
    keys = {"step": "step", "kl": "kl", "gold": "gold", "reward": "proxy"}  # eval.jsonl -> column
    row = {f"{name}_{column}": e[key] for name, e in points.items() for key, column in keys.items()}
    return row | {
        "gold_drop": peak["gold"] - trough["gold"],
        "gold_drop_to_end": peak["gold"] - end["gold"],
        "proxy_rise": end["reward"] - peak["reward"],
    }


def _curve_set(method: str, label: str, sources: list[tuple[str, list[dict]]], notes: list[str]) -> CurveSet:
    curves, (_, x, start) = CurveSet(method, label), METHODS[method]
    for source, rows in sources:
        if not rows:
            continue
        if rows[0][x] != start:
            notes.append(f"{method} {label}: `{source}` starts at {x} = {rows[0][x]}, not {start}: left out")
            continue
        for reward, keys in REWARDS.items():
            key = keys[0] if method == "rl" else keys[1]
            have = [r for r in rows if key in r and "kl" in r]
            if not have or have[0] is not rows[0]:
                continue
            try:
                d, gain = fitting.gains([math.sqrt(max(r["kl"], 0.0)) for r in have], [r[key] for r in have])
            except ValueError as error:
                notes.append(f"{method} {label}: `{source}` ({reward}): left out: {error}")
                continue
            points = {r[x]: (float(a), float(b)) for r, a, b in zip(have, d, gain, strict=True)}
            curves.seeds.setdefault(reward, []).append(points)
    return curves


# ------------------------------------------------------------------------------------------- tables
def write_fits(sets: list[CurveSet], notes: list[str], out: Path) -> str:
    """fits.csv (one row per configuration, method and reward) and fits.md; returns the Markdown."""
    columns = ["configuration", "method", "reward", "seeds", "points"]
    for name in ESTIMATES:
        columns += [name] if name == "r2" else [name, f"{name}_low", f"{name}_high"]
    rows = [fit_row(c, reward, result) for c in sets for reward, result in c.fits.items()]
    with open(out / "fits.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*columns, "d_max", "peak_share"])
        writer.writeheader()
        writer.writerows(rows)
    lines = [HEADER, *(_markdown(row) for row in rows)]
    if notes:
        lines += ["", *(f"- {note}" for note in notes)]
    text = "\n".join(lines) + "\n"
    (out / "fits.md").write_text(text)
    return text


def fit_row(curves: CurveSet, reward: str, result: fitting.SeedFit) -> dict:
    """A fits.csv row: the estimates, their intervals (NaN with one seed), the largest d measured and
    the share of bootstrap fits that have a peak."""
    row = {"configuration": curves.label, "method": curves.method, "reward": reward, "seeds": result.seeds}
    row |= {"points": result.fit.points, "r2": result.fit.r2, "peak_share": result.peak_share}
    row["d_max"] = max(d for seed in curves.seeds[reward] for d, _ in seed.values())
    for name in fitting.PARAMETERS:
        row[name] = result.estimate(name)
        row[f"{name}_low"], row[f"{name}_high"] = result.intervals[name]
    return row


def _markdown(row: dict) -> str:
    def cell(name: str, power: int = 1) -> str:
        value, low, high = (row[k] ** power for k in (name, f"{name}_low", f"{name}_high"))
        text = "no peak" if math.isnan(value) else f"{value:.3g}"
        text += "†" if name == "d_star" and row[name] > row["d_max"] else ""
        return text if math.isnan(low) or low == high == math.inf else f"{text} [{low:.3g}, {high:.3g}]"

    share = "–" if math.isnan(row["peak_share"]) else f"{row['peak_share']:.0%}"
    cells = [
        row["configuration"],
        row["method"],
        row["reward"],
        str(row["seeds"]),
        cell("alpha"),
        cell("beta"),
    ]
    cells += [
        f"{row['r2']:.3f}",
        cell("d_star"),
        cell("d_star", 2),
        cell("r_star"),
        f"{row['d_max']:.3g}",
        share,
    ]
    return "| " + " | ".join(cells) + " |"


# -------------------------------------------------------------------------------------------- plot
def plot_fits(sets: list[CurveSet], path: Path) -> Path:
    """Gold and proxy gained against √KL: each seed's points, the seed band (mean ± 95% interval at
    each eval step or n, at the seeds' mean √KL), the fitted curve and its peak; best-of-n dashed."""
    fig, axes = plots.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    colors = {label: f"C{i % 10}" for i, label in enumerate(sorted({s.label for s in sets}))}
    for ax, reward in zip(axes, REWARDS, strict=True):
        for curves in sets:
            if reward in curves.seeds:
                _draw(ax, curves, reward, colors[curves.label])
        ax.axhline(0, color="black", lw=0.5)
        ax.set_xlabel("√KL to the starting policy  [√nats]")
        ax.set_ylabel(f"{reward} reward gained")
        ax.set_title(f"{reward}: RL d(α − β log d), best-of-n d(α − β d)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Fits of Gao et al. (2022)'s forms (band: 95% interval over seeds; ×: fitted peak)")
    return plots.save(fig, path)


def _draw(ax, curves: CurveSet, reward: str, color: str) -> None:
    seeds, style = curves.seeds[reward], "-" if curves.method == "rl" else "--"
    for points in seeds:
        d, gain = zip(*points.values(), strict=True)
        ax.plot(d, gain, "o" if curves.method == "rl" else "s", color=color, ms=2.5, alpha=0.35)
    band = fitting.seed_band([{k: v[1] for k, v in s.items()} for s in seeds])
    if band is not None and len(seeds) > 1:
        d_mean = [float(np.mean([s[k][0] for s in seeds])) for k in band[0]]
        ax.fill_between(d_mean, band[2], band[3], color=color, alpha=0.15, lw=0)
    result = curves.fits.get(reward)
    if result is None:
        return
    top = max(d for s in seeds for d, _ in s.values())
    grid = np.linspace(0, top * 1.05, 200)
    label = f"{curves.method} {curves.label} (R² {result.fit.r2:.2f})"
    ax.plot(grid, result.fit(grid), style, color=color, label=label)
    if result.fit.has_peak and result.fit.d_star <= top * 1.05:
        ax.plot(result.fit.d_star, result.fit.r_star, "x", color=color, ms=9, mew=2)
