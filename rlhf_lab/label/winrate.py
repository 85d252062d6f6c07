"""The human win rate of a blind comparison, from the label file alone: the measure of Stiennon et al.
2020 ("Learning to summarize from human feedback", Fig. 1: how often people prefer the policy's summary
to the reference) and Ouyang et al. 2022 (InstructGPT, Fig. 1: how often people prefer a model's
output to the 175B SFT model's).

Each label event of a comparison (`label.judge`, report/judge.py) names the two policies (A, B) and
which one wrote the completion shown on each side. A decision scores A's completion 1 (A chosen), 0.5
(tie) or 0 (B chosen); skips are left out. A prompt judged by several annotators scores the mean of
their decisions, so the interval counts prompts, not decisions. The win rate of A over B is the mean over the
judged prompts, ties counting half, with its 95% Wilson score interval (Wilson 1927). Beside it, on the
same prompts and completions: the gold's and the proxy's win rates, each prompt scored 1, 0.5 or 0 by
which completion scores higher.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from statistics import NormalDist
from typing import Any

from rlhf_lab.label.records import Decision, LabelFileError, replay

Z95 = NormalDist().inv_cdf(0.975)  # 1.95996…


def wilson(rate: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion `rate` observed over `n` trials (ties counted half
    give a fractional count, which the formula takes as it is)."""
    if n <= 0:
        return (math.nan, math.nan)
    denominator = 1 + z * z / n
    centre = (rate + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n))
    return (max(0.0, centre - half), min(1.0, centre + half))


def human_score(d: Decision) -> float | None:
    """A's score in one decision: 1 if A's completion was chosen, 0.5 for a tie, 0 for B's; None for a
    skip."""
    if d.choice == "skip":
        return None
    if d.choice == "tie":
        return 0.5
    chosen = d.policy_a if d.choice == "a" else d.policy_b
    return 1.0 if chosen == d.comparison[0] else 0.0


def scored(d: Decision, kind: str) -> float | None:
    """A's score by `kind` ('gold' or 'proxy'): 1 if A's completion scores higher, 0.5 if equal, 0 if
    lower; None without scores."""
    left, right = getattr(d, f"{kind}_a"), getattr(d, f"{kind}_b")
    if left is None or right is None:
        return None
    a, b = (left, right) if d.policy_a == d.comparison[0] else (right, left)
    return 1.0 if a > b else 0.5 if a == b else 0.0


def rate(scores: list[float | None]) -> dict[str, float | None]:
    """The mean of per-prompt scores with its Wilson interval; None when any prompt has no score."""
    if not scores or any(s is None for s in scores):
        return {"rate": None, "low": None, "high": None}
    mean = sum(scores) / len(scores)
    low, high = wilson(mean, len(scores))
    return {"rate": mean, "low": low, "high": high}


def win_rates(decisions: list[Decision]) -> list[dict[str, Any]]:
    """One row per comparison in `decisions` (its order of first appearance): A, B, prompts judged,
    decisions, ties, and the human, gold and proxy win rates of A over B with their 95% intervals."""
    by_comparison: dict[tuple[str, str], dict[str, list[Decision]]] = {}
    for d in decisions:
        if d.comparison is not None and d.choice != "skip":
            by_comparison.setdefault(d.comparison, {}).setdefault(d.pair, []).append(d)
    return [_row(comparison, pairs) for comparison, pairs in by_comparison.items()]


def _row(comparison: tuple[str, str], pairs: dict[str, list[Decision]]) -> dict[str, Any]:
    judged = list(pairs.values())
    human = [sum(human_score(d) for d in ds) / len(ds) for ds in judged]
    row = {
        "a": comparison[0],
        "b": comparison[1],
        "prompts": len(judged),
        "decisions": sum(len(ds) for ds in judged),
        "ties": sum(d.choice == "tie" for ds in judged for d in ds),
    }
    for kind, scores in (
        ("human", human),
        ("gold", [scored(ds[0], "gold") for ds in judged]),
        ("proxy", [scored(ds[0], "proxy") for ds in judged]),
    ):
        found = rate(scores)
        row |= {kind: found["rate"], f"{kind}_low": found["low"], f"{kind}_high": found["high"]}
    return row


def read_decisions(path: str | Path) -> list[Decision]:
    """The standing decisions of a label file, read without taking its lock (the page may be serving
    it); a last line still being written is left out."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise LabelFileError(f"{path}: no such label file")
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")[:-1]  # the part after the last newline is not a whole line yet
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append((i, json.loads(line)))
        except json.JSONDecodeError as err:
            raise LabelFileError(f"{path}: row {i}: not a JSON line ({err.msg})") from err
        if not isinstance(rows[-1][1], dict):
            raise LabelFileError(f"{path}: row {i}: expected a JSON object")
    return replay(str(path), rows).decisions()


def comparisons_in(path: str | Path) -> list[dict[str, Any]]:
    """`win_rates` of a label file; an error naming the file when it holds no judged comparison."""
    rows = win_rates(read_decisions(path))
    if not rows:
        raise LabelFileError(
            f"{path}: no judged blind comparison in it (its label events carry no 'comparison' field, or "
            "only skips): label.judge=[A,B] writes them"
        )
    return rows


# ------------------------------------------------------------------------------------------ rendering
def short(name: str) -> str:
    """A policy's name for a table: its folder's last two parts, with the step (`rl/3fa2c1@40`)."""
    parts = Path(name).parts
    return "/".join(parts[-2:]) if len(parts) > 1 else name


def interval(row: dict[str, Any], kind: str) -> str:
    """'0.70 [0.48, 0.85]', or '–' without a rate."""
    if row[kind] is None:
        return "–"
    return f"{row[kind]:.2f} [{row[f'{kind}_low']:.2f}, {row[f'{kind}_high']:.2f}]"


HEADER = [
    "A",
    "B",
    "prompts judged",
    "ties",
    "people: A wins (95% CI)",
    "gold: A wins (95% CI)",
    "proxy: A wins (95% CI)",
]


def table_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    """Each comparison as the cells of HEADER."""
    return [
        [short(r["a"]), short(r["b"]), str(r["prompts"]), str(r["ties"])]
        + [interval(r, k) for k in ("human", "gold", "proxy")]
        for r in rows
    ]


def to_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_rows(rows)]
    return "\n".join(lines) + "\n"


def metrics(row: dict[str, Any], prefix: str) -> dict[str, float]:
    """A comparison's numbers as `<prefix>/<name>` metrics (human_win_rate, _low, _high, gold_…)."""
    out = {f"{prefix}/{k}": float(row[k]) for k in ("prompts", "decisions", "ties")}
    for kind in ("human", "gold", "proxy"):
        for suffix in ("", "_low", "_high"):
            if row[f"{kind}{suffix}"] is not None:
                out[f"{prefix}/{kind}_win_rate{suffix}"] = float(row[f"{kind}{suffix}"])
    return out
