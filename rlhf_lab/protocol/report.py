"""The report of a protocol, written from its curve rows alone (`curves.csv`), so that `rlhf-lab-compare
--report-only` recomputes every table and figure from the committed raw data:

    curves.csv       every run's evaluations: phase, arm, setting, seed, step, the budget, every metric
    finals.csv       every run's last evaluation, and its metric at each view (budget, matched KL)
    tuning.csv       every tuning run and its score under the selection rule
    chosen.yaml      each arm's chosen setting, its mean tuning score, its overrides
    arms.csv         each arm at each view: mean ± 95% t-interval, IQM with a 95% bootstrap interval
    comparisons.csv  each comparison at each view: paired differences, intervals, p, Holm's p, verdict
    signatures.csv   each evaluation run's gold peak, trough and end, and the proxy's rise after the peak
    report.md        the tables in Markdown
    curves.png       the metric against each view's axis, each evaluation seed and the arm's mean
"""

from __future__ import annotations

from pathlib import Path

import yaml

from rlhf_lab import plots
from rlhf_lab.protocol import analysis
from rlhf_lab.protocol.curves import IDENTITY, LEADING, read_csv, write_csv
from rlhf_lab.protocol.spec import Protocol

CURVES = "curves.csv"
ARM_COLUMNS = ("view", "arm", "n", "mean", "half", "iqm", "iqm_low", "iqm_high")
COMPARISON_COLUMNS = (
    "view comparison role n mean half low high boot_low boot_high iqm up down p p_holm verdict"
).split()


def write(protocol: Protocol, rows: list[dict], out: Path) -> str:
    """Every file of the report from the curve rows; returns the Markdown."""
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / CURVES, rows, IDENTITY)
    return write_from_curves(protocol, out)


def write_from_curves(protocol: Protocol, out: Path) -> str:
    """The report from `out/curves.csv` (everything but the curves themselves); returns the Markdown."""
    rows = read_csv(out / CURVES)
    final_rows = analysis.finals(protocol, rows)
    tuning = analysis.tuning_table(protocol, final_rows)
    chosen = analysis.choose(protocol, tuning)
    arms, comparisons = (
        analysis.arm_table(protocol, final_rows),
        analysis.comparison_table(protocol, final_rows),
    )
    views = [analysis.view_column(protocol, v) for v in protocol.views]
    write_csv(out / "finals.csv", final_rows, (*IDENTITY, *LEADING), last=views)
    write_csv(out / "tuning.csv", tuning, ("arm", "setting", "seed", "score"))
    write_csv(out / "arms.csv", arms, ARM_COLUMNS)
    write_csv(out / "comparisons.csv", comparisons, COMPARISON_COLUMNS)
    (out / "chosen.yaml").write_text(
        yaml.safe_dump(chosen_settings(protocol, tuning, chosen), sort_keys=False)
    )
    signature_rows = analysis.signatures(rows)
    if signature_rows:
        write_csv(out / "signatures.csv", signature_rows, IDENTITY)
    plot(protocol, rows, out / "curves.png")
    signature_table = analysis.signature_table(protocol, signature_rows) if signature_rows else None
    markdown = render(protocol, tuning, chosen, arms, comparisons, signature_table)
    (out / "report.md").write_text(markdown)
    return markdown


def chosen_settings(protocol: Protocol, tuning: list[dict], chosen: dict[str, str]) -> dict:
    scores = analysis.setting_scores(tuning)
    return {
        arm: {
            "setting": chosen[arm],
            "mean_tuning_score": scores.get(arm, {}).get(chosen[arm]),
            "overrides": [
                *protocol.arms[arm].overrides,
                *([] if chosen[arm] == "default" else chosen[arm].split()),
            ],
        }
        for arm in protocol.arms
    }


# ------------------------------------------------------------------------------------------ Markdown
def render(
    protocol: Protocol,
    tuning: list[dict],
    chosen: dict,
    arms: list[dict],
    comparisons: list[dict],
    signature_table: list[dict] | None = None,
) -> str:
    sections = [header(protocol), tuning_section(protocol, tuning, chosen), arms_section(arms)]
    sections += [comparisons_section(protocol, comparisons)]
    sections += [signature_section(signature_table)] if signature_table else []
    sections += [FOOTER]
    return "\n\n".join(sections) + "\n"


def header(protocol: Protocol) -> str:
    views = ", ".join(f"**{v}**" for v in protocol.views)
    title = f"# {protocol.name}" + (f": {protocol.question}" if protocol.question else "")
    return (
        f"{title}\n\nDeclared in `{protocol.path.name}`, run by `rlhf-lab-compare {protocol.path.name}`. "
        f"Metric: held-out `{protocol.metric}` (higher is better), compared at {views}: each run's curve "
        "over its held-out evaluations interpolated linearly at that value (at a KL: where the run's KL "
        "first reaches it; at the peak: the run's best evaluation), never extrapolated. Each arm's setting "
        f"is chosen by {protocol.rule()} "
        f"(tuning seeds {list(protocol.tuning_seeds)}), then run on the evaluation seeds "
        f"{list(protocol.evaluation_seeds)}, paired across arms."
    )


def tuning_section(protocol: Protocol, tuning: list[dict], chosen: dict[str, str]) -> str:
    lines = ["## Tuning", "", "| arm | setting | mean score | runs | chosen |", "|---|---|---:|---:|:---:|"]
    for arm, settings in analysis.setting_scores(tuning).items():
        for setting, mean in settings.items():
            runs = sum(r["arm"] == arm and r["setting"] == setting for r in tuning)
            lines.append(
                f"| {arm} | `{setting}` | {_num(mean)} | {runs} | {'✓' if chosen[arm] == setting else ''} |"
            )
    untuned = [f"{a} (`{chosen[a]}`)" for a, arm in protocol.arms.items() if len(arm.settings()) == 1]
    return "\n".join(
        lines + (["", "Not tuned (one setting): " + ", ".join(untuned) + "."] if untuned else [])
    )


def arms_section(arms: list[dict]) -> str:
    lines = [
        "## Arms",
        "",
        "| at | arm | seeds | mean ± 95% t | IQM [95% bootstrap] |",
        "|---|---|---:|---:|---:|",
    ]
    for r in arms:
        mean = f"{_num(r['mean'])} ± {_num(r['half'], sign=False)}" if "mean" in r else "–"
        iqm = f"{_num(r['iqm'])} [{_num(r['iqm_low'])}, {_num(r['iqm_high'])}]" if "iqm" in r else "–"
        lines.append(f"| {r['view']} | {r['arm']} | {r['n']} | {mean} | {iqm} |")
    return "\n".join(lines)


def comparisons_section(protocol: Protocol, comparisons: list[dict]) -> str:
    m = sum("p_holm" in c for c in comparisons)
    lines = [
        f"## Comparisons (paired by seed; {protocol.test} test; Holm over the {m} comparisons)",
        "",
        "| at | comparison | seeds | Δ mean ± 95% t | 95% bootstrap | IQM Δ | +/− | p | Holm p | verdict |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in comparisons:
        name = f"**{c['comparison']}** (primary)" if c["role"] == "primary" else c["comparison"]
        cells = ["–"] * 6
        if "p_holm" in c:
            cells = [
                f"{_num(c['mean'])} ± {_num(c['half'], sign=False)}",
                f"[{_num(c['boot_low'])}, {_num(c['boot_high'])}]",
                _num(c["iqm"]),
                f"{c['up']}/{c['down']}",
                f"{c['p']:.3g}",
                f"{c['p_holm']:.3g}",
            ]
        lines.append(f"| {c['view']} | {name} | {c['n']} | " + " | ".join([*cells[:6], c["verdict"]]) + " |")
    return "\n".join(lines)


def signature_section(table: list[dict]) -> str:
    """Each arm's overoptimization signature, mean ± 95% t over its evaluation seeds."""
    columns = analysis.SIGNATURE
    lines = [
        "## The overoptimization signature (evaluation seeds, mean ± 95% t; `signatures.csv`)",
        "",
        "The gold's peak along each run, its end, how far it falls from the peak to the end, and how far the "
        "proxy (`reward`) rises after the peak.",
        "",
        "| arm | seeds | " + " | ".join(columns) + " |",
        "|---|---:|" + "---:|" * len(columns),
    ]
    for row in table:
        cells = [
            f"{_num(row[c])} ± {_num(row[c + '_half'], sign=False)}" if c in row else "–" for c in columns
        ]
        lines.append(f"| {row['arm']} | {row['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


FOOTER = (
    "![the metric against each view's axis](curves.png)\n\nRaw data: `curves.csv` (every run's evaluations "
    "with their budgets), `finals.csv`, `tuning.csv`, `chosen.yaml`, `arms.csv`, `comparisons.csv`; "
    "`rlhf-lab-compare --report-only` recomputes this report from `curves.csv`."
)


def _num(value, sign: bool = True) -> str:
    if value is None:
        return "–"
    return f"{value:+.3f}" if sign else f"{value:.3f}"


# ------------------------------------------------------------------------------------------- the plot
def _points(curve: list[dict], axis: str, metric: str) -> tuple[list, list]:
    """(xs, ys) of a curve's evaluations that have both."""
    points = [(r[axis], r[metric]) for r in curve if r.get(axis) is not None and r.get(metric) is not None]
    return [x for x, _ in points], [y for _, y in points]


def plot(protocol: Protocol, rows: list[dict], path: Path) -> Path:
    """One panel per view: the metric against the view's axis, a thin line per evaluation run, the arm's
    mean over seeds at each evaluation in bold, the view's value dashed."""
    runs = {k: v for k, v in analysis.by_run(rows).items() if k[0] == "evaluation"}
    axes_shown = list(dict.fromkeys(v.axis for v in protocol.views if v.axis != "peak"))
    fig, axes = plots.subplots(1, len(axes_shown), figsize=(5.5 * len(axes_shown), 4.2), squeeze=False)
    colors = {arm: f"C{i}" for i, arm in enumerate(protocol.arms)}
    for ax, axis in zip(axes[0], axes_shown, strict=True):
        for arm in protocol.arms:
            curves = [_points(c, axis, protocol.metric) for k, c in runs.items() if k[1] == arm]
            for xs, ys in curves:
                ax.plot(xs, ys, color=colors[arm], alpha=0.25, lw=0.8)
            if curves and len({len(xs) for xs, _ in curves}) == 1:  # the same evaluation points: their mean
                xs, ys = (
                    [sum(v) / len(curves) for v in zip(*part, strict=True)]
                    for part in zip(*curves, strict=True)
                )
                ax.plot(xs, ys, color=colors[arm], lw=2, label=arm)
        for view in protocol.views:
            if view.axis == axis:
                ax.axvline(view.value, color="gray", ls="--", lw=1)
        plots.dress(ax, axis, protocol.metric, f"{protocol.metric} against {axis}")
        ax.legend(fontsize=8)
    return plots.save(fig, path)
