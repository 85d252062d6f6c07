"""`rlhf-lab-report <run or multirun dir>`: every run's final metrics in one table, and the plots.

Reads what runs leave on disk — `.hydra/` (config and overrides), `result.json` (status, artifacts,
metrics) and the CSV training logs that travel with the RL artifacts — so it works offline and on
runs whose stages were cache hits. Runs that failed or never finished are listed, not fatal.

Writes to `<dir>/report/` (or `--out`):
    runs.csv               one row per run: status, its overrides, its final metrics (tidy)
    summary.md             mean ± 95% interval over seeds per configuration, the failed or missing runs
    fits.csv, fits.md      Gao et al.'s forms per configuration, RL and best-of-n, gold and proxy against
                           √KL: α, β, R², peak (d*, R*), bootstrap 95% intervals over seeds (fits.py)
    learning_curves.png    gold, proxy and KL per RL step; mean over seeds, 95% interval band
    gold_vs_kl.png         final gold against √KL, one line per algorithm through its β values
    overoptimization.png   proxy against gold during training (and over n for best-of-n)
    bon_vs_rl.png          best-of-n and RL on the same axes: gold and proxy against √KL
    fits.png               the fits: each seed's points, the seed band, the fitted curves, the peaks
    frontier.{csv,md,png}  final gold against KL per method: DPO and RL over β, best-of-n over n
Runs that differ only in `seed` or a `<stage>.seed` are one configuration's seeds.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rlhf_lab import plots
from rlhf_lab.artifacts import LOG_FILE, RESULT_FILE
from rlhf_lab.report import fitting, frontier
from rlhf_lab.report.fits import fit_configurations, plot_fits, read_evals, write_fits

IGNORED_OVERRIDES = ("hydra", "seed", "logger", "trainer.enable_progress_bar")  # not a configuration
HEADLINE = [f"{s}/eval/{m}" for s in ("rl", "dpo") for m in ("gold", "reward", "kl", "win_rate", "gold_gain")]


@dataclass
class Run:
    path: Path
    status: str  # completed | failed | missing (no result: still running, killed, or never started)
    overrides: dict[str, str] = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    error: str = ""
    label: str = ""  # the configuration: overrides that vary across the runs, seed excluded

    @property
    def seed(self) -> str:
        """The run's seeds: `seed`, and each `<stage>.seed` overridden on the command line."""
        stages = [f"{k}={v}" for k, v in sorted(self.overrides.items()) if k.endswith(".seed")]
        return " ".join([str(self.config.get("seed")), *stages])

    @property
    def algo(self) -> str:
        return self.config.get("algo", {}).get("name", "?")

    @property
    def beta(self) -> float | None:
        return self.config.get("algo", {}).get("kl", {}).get("beta")


def find_runs(root: Path) -> list[Run]:
    """Every Hydra job below `root` (or `root` itself), sorted by path; labelled by what varies."""
    runs = [load_run(hydra.parent) for hydra in sorted(Path(root).glob("**/.hydra")) if hydra.is_dir()]
    varying = _varying_keys(runs)
    for run in runs:
        run.label = " ".join(f"{k}={run.overrides[k]}" for k in varying if k in run.overrides) or "default"
    return runs


def load_run(path: Path) -> Run:
    hydra = path / ".hydra"
    config = yaml.safe_load((hydra / "config.yaml").read_text()) if (hydra / "config.yaml").is_file() else {}
    overrides = {}
    if (hydra / "overrides.yaml").is_file():
        for item in yaml.safe_load((hydra / "overrides.yaml").read_text()) or []:
            key, _, value = item.partition("=")
            overrides[key.lstrip("+~")] = value
    result_file = path / RESULT_FILE
    if not result_file.is_file():
        return Run(path, "missing", overrides, config)
    result = json.loads(result_file.read_text())
    return Run(
        path,
        result.get("status", "completed"),
        overrides,
        config,
        metrics=result.get("metrics", {}),
        artifacts=result.get("artifacts", {}),
        error=result.get("error", ""),
    )


def _varying_keys(runs: list[Run]) -> list[str]:
    values: dict[str, set] = defaultdict(set)
    for run in runs:
        for key, value in run.overrides.items():
            values[key].add(value)
    keys = [k for k, v in values.items() if not k.startswith(IGNORED_OVERRIDES) and not k.endswith(".seed")]
    return sorted(k for k in keys if len(values[k]) > 1 or len(runs) == 1)


# ------------------------------------------------------------------------------------------- tables
def write_tables(runs: list[Run], out: Path) -> str:
    """runs.csv (one row per run) and summary.md (per configuration); returns the Markdown."""
    metric_names = sorted({k for r in runs for k in r.metrics})
    override_names = sorted({k for r in runs for k in r.overrides})
    with open(out / "runs.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "status", "configuration", "seed", *override_names, *metric_names])
        for r in runs:
            writer.writerow(
                [
                    str(r.path),
                    r.status,
                    r.label,
                    r.seed,
                    *(r.overrides.get(k, "") for k in override_names),
                    *(r.metrics.get(k, "") for k in metric_names),
                ]
            )
    columns = [m for m in HEADLINE if any(m in r.metrics for r in runs)] or metric_names[:6]
    lines = [
        "Mean ± 95% t-interval over seeds (the value alone for one seed).",
        "",
        "| configuration | runs | " + " | ".join(columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for label, group in _by_label([r for r in runs if r.status == "completed"]).items():
        cells = [fitting.format_interval([r.metrics[c] for r in group if c in r.metrics]) for c in columns]
        lines.append(f"| {label} | {len(group)} | " + " | ".join(cells) + " |")
    bad = [r for r in runs if r.status != "completed"]
    if bad:
        lines += ["", "Failed or missing runs:", ""]
        lines += [f"- `{r.path}` ({r.label}): {r.status}{': ' + r.error if r.error else ''}" for r in bad]
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    return text


def _by_label(runs: list[Run]) -> dict[str, list[Run]]:
    groups: dict[str, list[Run]] = defaultdict(list)
    for r in runs:
        groups[r.label].append(r)
    return dict(groups)


# -------------------------------------------------------------------------------------------- curves
def read_curve(run: Run) -> dict[str, list[tuple[int, float]]]:
    """The RL training log of a run: metric -> [(step, value)], from its artifact (or its run dir)."""
    candidates = [Path(run.artifacts["rl"]) / LOG_FILE] if "rl" in run.artifacts else []
    candidates.append(run.path / "rl" / "csv" / "metrics.csv")
    path = next((p for p in candidates if p.is_file()), None)
    curves: dict[str, list[tuple[int, float]]] = defaultdict(list)
    if path is None:
        return curves
    with open(path) as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if key != "step" and value not in ("", None):
                    curves[key].append((int(float(row["step"])), float(value)))
    return curves


def fit_runs(runs: list[Run]):
    """`fits.fit_configurations` on the completed runs: per configuration, one RL curve per
    distinct RL artifact (or run) and its best-of-n artifacts."""
    evals, bon = {}, {}
    for label, group in _by_label([r for r in runs if r.status == "completed"]).items():
        by_source = {r.artifacts.get("rl", str(r.path)): r for r in group}
        evals[label] = [
            (source, read_evals(source, lambda r=r: read_curve(r))) for source, r in by_source.items()
        ]
        bon[label] = [r.artifacts["bon"] for r in group if "bon" in r.artifacts]
    return fit_configurations(evals, bon)


def _smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average (the first points average what exists)."""
    return [statistics.mean(values[max(0, i - window + 1) : i + 1]) for i in range(len(values))]


def _band(runs: list[Run], curves: dict[Path, dict], metric: str):
    """(steps, mean, low, high: 95% interval) over the runs' smoothed curves of `metric`, common steps."""
    series = []
    for r in runs:
        points = dict(curves[r.path].get(metric, []))
        if points:
            steps = sorted(points)
            series.append(
                dict(zip(steps, _smooth([points[s] for s in steps], max(1, len(steps) // 10)), strict=True))
            )
    return fitting.seed_band(series)


# ------------------------------------------------------------------------------------------- plots
def plot_all(runs: list[Run], out: Path, fitted=None) -> list[Path]:
    sets = (fitted or fit_runs(runs))[0]
    fitted_plot = [plot_fits(sets, out / "fits.png")] if sets else []
    rl_runs = [r for r in runs if r.status == "completed" and "rl/eval/kl" in r.metrics]
    if not rl_runs:
        return fitted_plot
    curves = {r.path: read_curve(r) for r in rl_runs}
    return [
        plot_learning_curves(rl_runs, curves, out / "learning_curves.png"),
        plot_gold_vs_kl(rl_runs, out / "gold_vs_kl.png"),
        plot_overoptimization(rl_runs, curves, out / "overoptimization.png"),
        plot_bon_vs_rl(rl_runs, out / "bon_vs_rl.png"),
        *fitted_plot,
    ]


def _colors(labels) -> dict[str, str]:
    return {label: f"C{i % 10}" for i, label in enumerate(sorted(set(labels)))}


def plot_learning_curves(runs: list[Run], curves: dict, path: Path) -> Path:
    panels = [
        ("rl/train/gold", "gold reward"),
        ("rl/train/reward", "proxy reward"),
        ("rl/train/kl", "KL (nats)"),
    ]
    groups, colors = _by_label(runs), _colors(r.label for r in runs)
    fig, axes = plots.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    for ax, (metric, name) in zip(axes, panels, strict=True):
        for label, group in groups.items():
            band = _band(group, curves, metric)
            if band is None:
                continue
            steps, mean, low, high = band
            seeds = f"{len(group)} seed{'s' if len(group) > 1 else ''}"
            ax.plot(steps, mean, color=colors[label], label=f"{label} ({seeds})")
            if len(group) > 1:
                ax.fill_between(steps, low, high, color=colors[label], alpha=0.2)
        plots.dress(ax, "RL step", name, name)
    axes[0].legend(fontsize=7)
    fig.suptitle("Learning curves (smoothed; band: 95% interval over seeds)")
    return plots.save(fig, path)


def plot_gold_vs_kl(runs: list[Run], path: Path) -> Path:
    """Final gold against √KL: one line per algorithm through its β values; error bars: 95% intervals."""
    fig, ax = plots.subplots(figsize=(5.5, 4))
    by_algo: dict[str, dict[float, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        by_algo[r.algo][r.beta].append(r)
    for i, (algo, by_beta) in enumerate(sorted(by_algo.items())):
        points = []
        for beta, group in by_beta.items():
            xs = [math.sqrt(max(r.metrics["rl/eval/kl"], 0)) for r in group]
            ys = [r.metrics.get("rl/eval/gold", r.metrics["rl/eval/reward"]) for r in group]
            points.append((statistics.mean(xs), statistics.mean(ys), _spread(xs), _spread(ys), beta))
        points.sort()
        ax.errorbar(
            [p[0] for p in points],
            [p[1] for p in points],
            xerr=[p[2] for p in points],
            yerr=[p[3] for p in points],
            fmt="o-",
            color=f"C{i}",
            capsize=3,
            label=algo,
        )
        for x, y, _, _, beta in points:
            ax.annotate(f"β={beta:g}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    plots.dress(ax, "√KL(π ‖ π_SFT)  [√nats]", "gold reward (held-out)", "Gold reward against KL")
    ax.legend(title="algorithm")
    return plots.save(fig, path)


def _spread(values: list[float]) -> float:
    """Half-width of the 95% interval over seeds (0 for one seed)."""
    half = fitting.mean_interval(values)[1]
    return 0.0 if math.isnan(half) else half


def plot_overoptimization(runs: list[Run], curves: dict, path: Path) -> Path:
    """Proxy against gold: RL along training (smoothed, seeds averaged), best-of-n along n. A proxy that
    keeps rising while gold stalls or falls is reward overoptimization (Gao et al. 2022)."""
    fig, ax = plots.subplots(figsize=(5.5, 4))
    colors = _colors(r.label for r in runs)
    for label, group in _by_label(runs).items():
        proxy, gold = _band(group, curves, "rl/train/reward"), _band(group, curves, "rl/train/gold")
        if proxy is None or gold is None:
            continue
        common = sorted(set(proxy[0]) & set(gold[0]))
        p, g = dict(zip(proxy[0], proxy[1], strict=True)), dict(zip(gold[0], gold[1], strict=True))
        ax.plot([p[s] for s in common], [g[s] for s in common], "-", color=colors[label], label=label)
        ax.plot(p[common[-1]], g[common[-1]], "o", color=colors[label])
    bon = _bon_table(runs)
    if bon and "gold" in bon[0]:
        ax.plot([r["proxy"] for r in bon], [r["gold"] for r in bon], "s--", color="gray", label="best-of-n")
    plots.dress(ax, "proxy reward", "gold reward", "Overoptimization: proxy vs gold (dot: end of training)")
    ax.legend(fontsize=7)
    return plots.save(fig, path)


def plot_bon_vs_rl(runs: list[Run], path: Path) -> Path:
    """Gold and proxy against √KL: the best-of-n curve and each RL configuration's final point."""
    fig, axes = plots.subplots(1, 2, figsize=(10, 4), sharex=True)
    bon, colors = _bon_table(runs), _colors(r.label for r in runs)
    for ax, key, bon_key, name in (
        (axes[0], "rl/eval/gold", "gold", "gold reward"),
        (axes[1], "rl/eval/reward", "proxy", "proxy reward"),
    ):
        if bon and bon_key in bon[0]:
            x = [math.sqrt(r["kl"]) for r in bon]
            ax.plot(x, [r[bon_key] for r in bon], "s-", color="gray", label="best-of-n")
            for xi, r in zip(x, bon, strict=True):
                ax.annotate(
                    f"n={r['n']}", (xi, r[bon_key]), textcoords="offset points", xytext=(3, 4), fontsize=7
                )
        for label, group in _by_label(runs).items():
            xs = [math.sqrt(max(r.metrics["rl/eval/kl"], 0)) for r in group]
            ys = [r.metrics[key] for r in group if key in r.metrics]
            if ys:
                ax.plot(
                    statistics.mean(xs), statistics.mean(ys), "*", ms=11, color=colors[label], label=label
                )
        plots.dress(ax, "√KL to the SFT policy  [√nats]", name, name)
    axes[0].legend(fontsize=7)
    fig.suptitle("Best-of-n vs RL")
    return plots.save(fig, path)


def _bon_table(runs: list[Run]) -> list[dict]:
    """The best-of-n table of the first run that has a bon artifact (the sweep shares it)."""
    for r in runs:
        table = Path(r.artifacts.get("bon", "/nonexistent")) / "bon.json"
        if table.is_file():
            return json.loads(table.read_text())
    return []


# ----------------------------------------------------------------------------------------------- CLI
def report(root: Path, out: Path | None = None) -> tuple[str, list[Path]]:
    """Write the tables, fits and plots of every run below `root`; return the Markdown and the plots."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such run or multirun directory")
    runs = find_runs(root)
    if not runs:
        raise FileNotFoundError(f"{root}: no Hydra runs below it (no .hydra/ folders)")
    out = Path(out) if out else root / "report"
    out.mkdir(parents=True, exist_ok=True)
    fitted = fit_runs(runs)
    markdown = write_tables(runs, out) + "\n" + write_fits(*fitted, out)
    markdown += frontier.write_frontier(runs, out)  # DPO, RL and best-of-n: gold against KL
    return markdown, plot_all(runs, out, fitted)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="rlhf-lab-report", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="a run directory or a multirun (sweep) directory")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: <root>/report)")
    args = parser.parse_args(argv)
    try:
        markdown, plots = report(args.root, args.out)
    except FileNotFoundError as error:
        parser.exit(2, f"rlhf-lab-report: {error}\n")
    print(markdown)
    for plot in plots:
        print(f"plot: {plot}")


if __name__ == "__main__":
    main()
