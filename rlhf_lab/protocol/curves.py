"""Each run's evaluation curve (its `eval.jsonl` with the wall time of `budget.jsonl`), the value of a
metric at a budget or a KL read off it, and the CSVs that carry the curves.

A curve is a list of rows, one per held-out evaluation: `step`, the budget axes (`budget.AXES`) and
every eval.jsonl column (gold, reward = the proxy, kl, length, win_rate, DPO's val_*). CSV cells are
written so that they read back to the same numbers (Python's shortest round-trip repr), so every table
recomputed from the CSVs equals the one written from the runs.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from rlhf_lab import budget as budgets
from rlhf_lab.evaluation import EVALS

IDENTITY = ("phase", "arm", "setting", "seed")  # which run a row belongs to
LEADING = ("step", *budgets.AXES)
FIRST_METRICS = ("gold", "reward", "kl", "length", "win_rate")  # then the rest, sorted
TEXT = {"phase", "arm", "setting"}  # every other cell is a number (or empty)


class MissingBudget(Exception):
    """An artifact built before budgets were recorded: its eval.jsonl has no budget_* columns."""


def read_run(artifact: Path) -> list[dict]:
    """The curve of one RL or DPO artifact: its evaluations with the budget spent at each."""
    rows = [json.loads(line) for line in (Path(artifact) / EVALS).read_text().splitlines()]
    if not rows or any(f"budget_{k}" not in r for r in rows for k in budgets.COUNTS):
        raise MissingBudget(f"{artifact}/{EVALS} has no budget columns")
    seconds = {step: b["wall_time"] for step, b in budgets.read(Path(artifact) / budgets.BUDGET).items()}
    curve = []
    for row in rows:
        counts = {k: row.pop(f"budget_{k}") for k in budgets.COUNTS}
        wall_time = 0.0 if row["step"] == 0 else seconds.get(row["step"])
        curve.append({"step": row.pop("step"), **counts, "wall_time": wall_time, **row})
    return curve


def interpolate(xs: Sequence[float], ys: Sequence[float | None], x: float) -> float | None:
    """y at x, linear between the first point with xs ≥ x and the point before it; None when no point
    reaches x (no extrapolation) or a y needed is missing. Along a budget axis (non-decreasing) this is
    the curve at that budget; along KL, the value where the run's KL first reaches x."""
    i = next((i for i, v in enumerate(xs) if v is not None and v >= x), None)
    if i is None or ys[i] is None:
        return None
    if i == 0 or xs[i] == x:
        return ys[i]
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    if y0 is None or x0 is None:
        return None
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def value_at(curve: list[dict], axis: str, x: float, metric: str) -> float | None:
    """`metric` of a run at `axis` = x (`interpolate`); at axis `peak`, its largest value over the run."""
    if axis == "peak":
        return max((r[metric] for r in curve if r.get(metric) is not None), default=None)
    return interpolate([r.get(axis) for r in curve], [r.get(metric) for r in curve], x)


# ----------------------------------------------------------------------------------------- CSVs
def columns(rows: Iterable[dict], first: Sequence[str], last: Sequence[str] = ()) -> list[str]:
    """`first`, the leading columns and the metrics the rows have, the others sorted, then `last`: one
    fixed order."""
    present = {k for r in rows for k in r} - set(last)
    leading = [k for k in (*first, *LEADING) if k in present or k in first]
    metrics = [k for k in FIRST_METRICS if k in present]
    rest = sorted(present - set(leading) - set(metrics))
    return list(dict.fromkeys([*leading, *metrics, *rest, *last]))


def write_csv(path: Path, rows: list[dict], first: Sequence[str] = (), last: Sequence[str] = ()) -> None:
    """Rows as CSV (columns in `columns`' order), numbers as their shortest round-trip repr, None as an
    empty cell."""
    header = columns(rows, first, last)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([[_cell(r.get(k)) for k in header] for r in rows])


def read_csv(path: Path) -> list[dict]:
    """The rows `write_csv` wrote, with the same values."""
    with open(path, newline="") as f:
        return [{k: v if k in TEXT else _number(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, float) else str(value)


def _number(text: str) -> int | float | str | None:
    if text == "":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text  # a verdict, a bool
