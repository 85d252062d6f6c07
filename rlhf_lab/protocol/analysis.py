"""What a protocol's curves say, as pure functions of the curve rows (`curves.csv`): each run's final
values and its metric at every view, the tuning scores and the settings they choose, each arm at each
view, and the comparisons with their Holm-corrected verdicts (`report/stats.py`).

Why this shape: Henderson et al. 2018 ("Deep RL that matters") showed that seeds, tuning and budgets
decide comparisons, so every arm is tuned by one declared rule on its own seeds and compared on fresh
ones at a declared budget; Agarwal et al. 2021 ("Deep RL at the edge of the statistical precipice")
recommend, for few runs, the interquartile mean and bootstrap intervals beside the mean's t-interval.
"""

from __future__ import annotations

import statistics
from collections import defaultdict

from rlhf_lab.protocol.curves import IDENTITY, value_at
from rlhf_lab.protocol.spec import Protocol, ProtocolError, View
from rlhf_lab.report import stats
from rlhf_lab.report.fits import signature

Run = tuple[str, str, str, int]  # (phase, arm, setting, seed)
SIGNATURE = ("peak_kl", "peak_gold", "end_kl", "end_gold", "gold_drop_to_end", "end_proxy", "proxy_rise")


def by_run(rows: list[dict]) -> dict[Run, list[dict]]:
    """The curve rows of each run, in the order they come."""
    runs: dict[Run, list[dict]] = defaultdict(list)
    for row in rows:
        runs[tuple(row[k] for k in IDENTITY)].append(row)
    return dict(runs)


def view_column(protocol: Protocol, view: View) -> str:
    return f"{protocol.metric}@{view}"


def finals(protocol: Protocol, rows: list[dict]) -> list[dict]:
    """One row per run: its identity, its last evaluation (step, budget, every metric) and its metric at
    each view (empty where the run never reached the view's value)."""
    out = []
    for run, curve in by_run(rows).items():
        at = {
            view_column(protocol, v): value_at(curve, v.axis, v.value, protocol.metric)
            for v in protocol.views
        }
        out.append(dict(zip(IDENTITY, run, strict=True)) | curve[-1] | at)
    return out


# ------------------------------------------------------------------------------------------ tuning
def score(protocol: Protocol, final: dict) -> float | None:
    """A tuning run's score under the protocol's selection rule."""
    if protocol.selection == "max_mean_final":
        return final.get(protocol.metric)
    return final[view_column(protocol, protocol.budget)]


def tuning_table(protocol: Protocol, final_rows: list[dict]) -> list[dict]:
    """One row per tuning run: arm, setting, seed, its score."""
    return [
        {"arm": f["arm"], "setting": f["setting"], "seed": f["seed"], "score": score(protocol, f)}
        for f in final_rows
        if f["phase"] == "tuning"
    ]


def setting_scores(table: list[dict]) -> dict[str, dict[str, float | None]]:
    """arm -> setting -> the mean score over the tuning seeds (None if a run has no score), grid order."""
    scores: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for row in table:
        scores[row["arm"]][row["setting"]].append(row["score"])
    return {
        arm: {s: None if None in v else statistics.fmean(v) for s, v in settings.items()}
        for arm, settings in scores.items()
    }


def choose(protocol: Protocol, table: list[dict]) -> dict[str, str]:
    """arm -> its chosen setting: the best mean score (the first in grid order on a tie); an arm with one
    setting keeps it. A ProtocolError names an arm none of whose settings has a score."""
    scores = setting_scores(table)
    chosen = {}
    for name, arm in protocol.arms.items():
        if len(arm.settings()) == 1:
            chosen[name] = setting_label(arm.settings()[0])
            continue
        scored = {s: v for s, v in scores.get(name, {}).items() if v is not None}
        if not scored:
            raise ProtocolError(
                f"arm {name}: no tuning run has a score under {protocol.selection} (did the runs reach "
                f"{protocol.budget}? tuning_overrides may shorten them below it)"
            )
        chosen[name] = max(scored, key=lambda s: scored[s])  # max keeps the first of equal scores
    return chosen


def setting_label(setting: tuple[str, ...]) -> str:
    return " ".join(setting) or "default"


# --------------------------------------------------------------------------------- the comparison
def per_seed(protocol: Protocol, final_rows: list[dict], arm: str, view: View) -> dict[int, float]:
    """seed -> the arm's metric at `view`, over the evaluation runs that reached it."""
    column = view_column(protocol, view)
    return {
        f["seed"]: f[column]
        for f in final_rows
        if f["phase"] == "evaluation" and f["arm"] == arm and f[column] is not None
    }


def arm_table(protocol: Protocol, final_rows: list[dict]) -> list[dict]:
    """Each arm at each view: the seeds that reached it, mean ± 95% t-interval, IQM and its 95% bootstrap
    interval (Agarwal et al. 2021)."""
    rows = []
    for view in protocol.views:
        for arm in protocol.arms:
            values = list(per_seed(protocol, final_rows, arm, view).values())
            row = {"view": str(view), "arm": arm, "n": len(values)}
            if len(values) >= 2:
                d = stats.mean_difference(values)  # the mean's t-interval: a one-sample "difference" from 0
                low, high = stats.bootstrap_interval(values)
                row |= {
                    "mean": d.mean,
                    "half": d.half,
                    "iqm": stats.iqm(values),
                    "iqm_low": low,
                    "iqm_high": high,
                }
            rows.append(row)
    return rows


def comparison_table(protocol: Protocol, final_rows: list[dict]) -> list[dict]:
    """Every comparison a − b at every view, paired by evaluation seed: the mean difference and its 95%
    t-interval, a 95% bootstrap interval of the mean difference, the differences' IQM, the seeds each way,
    the test's p, Holm's p over all the comparisons made (those with ≥ 2 paired seeds) and the verdict."""
    family, rows = {}, []
    for view in protocol.views:
        for i, (a, b) in enumerate(protocol.pairs):
            x, y = (per_seed(protocol, final_rows, arm, view) for arm in (a, b))
            row = {
                "view": str(view),
                "comparison": f"{a} − {b}",
                "role": "primary" if i == 0 else "secondary",
            }
            differences = stats.paired(x, y)
            row["n"] = len(differences)
            if len(differences) >= 2:
                family[_name(row)] = (x, y)
                low, high = stats.bootstrap_interval(differences, statistic=statistics.fmean)
                row |= {
                    "boot_low": low,
                    "boot_high": high,
                    "iqm": stats.iqm(differences),
                    "up": sum(d > 0 for d in differences),
                    "down": sum(d < 0 for d in differences),
                }
            rows.append(row)
    tested = {c.name: c for c in stats.compare(family, test=protocol.test)} if family else {}
    for row in rows:
        if (c := tested.get(_name(row))) is not None:
            d = c.difference
            row |= {"mean": d.mean, "half": d.half, "low": d.low, "high": d.high}
            row |= {"p": c.p, "p_holm": c.p_holm, "verdict": c.verdict}
        else:
            row["verdict"] = "not compared: fewer than 2 seeds reached it"
    return rows


def _name(row: dict) -> str:
    return f"{row['comparison']} at {row['view']}"


# ----------------------------------------------------------------------- the overoptimization signature
def signatures(rows: list[dict]) -> list[dict]:
    """Each evaluation run's overoptimization signature (`report.fits.signature`: the gold's peak, the
    trough after it, the end, the proxy's rise after the peak); none when the curves have no gold and
    proxy (`reward`)."""
    runs = [(run, curve) for run, curve in by_run(rows).items() if run[0] == "evaluation"]
    if not all(r.get("gold") is not None and r.get("reward") is not None for _, c in runs for r in c):
        return []
    return [dict(zip(IDENTITY, run, strict=True)) | signature(curve) for run, curve in runs]


def signature_table(protocol: Protocol, signature_rows: list[dict]) -> list[dict]:
    """Each arm's signature (`SIGNATURE`'s columns): mean and 95% t half-width over its evaluation seeds."""
    rows = []
    for arm in protocol.arms:
        runs = [s for s in signature_rows if s["arm"] == arm]
        row: dict = {"arm": arm, "n": len(runs)}
        for column in SIGNATURE if len(runs) >= 2 else ():
            d = stats.mean_difference([r[column] for r in runs])
            row |= {column: d.mean, f"{column}_half": d.half}
        rows.append(row)
    return rows
