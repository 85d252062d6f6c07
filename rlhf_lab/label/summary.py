"""What the label file says so far: per annotator their labels, ties, skips, time per label and agreement
with the gold ordering; between annotators, agreement (and Cohen's κ) on the pairs both judged; in all,
how many pairs `labeler=file` will train on. As a dict (the JSON API), an HTML page and Markdown.

Verdicts are compared in the pair's sorted orientation, so the side a completion was shown on does not
matter. Agreement counts a tie as a verdict; skips are left out. Gold agreement counts the decisions
that prefer one completion, on pairs whose gold scores differ. A label file of blind comparisons
(`label.judge`) adds each comparison's win rates: people's, the gold's and the proxy's (winrate.py).
"""

from __future__ import annotations

import html
import itertools
import statistics
from typing import Any

from rlhf_lab.label import winrate
from rlhf_lab.label.records import Decision, majority

VERDICTS = ("first", "second", "tie")


def summarize(decisions: list[Decision], undone: int, total: int | None) -> dict[str, Any]:
    """The summary of the standing `decisions` (of `total` pairs to label, when known)."""
    by_annotator: dict[str, list[Decision]] = {}
    by_pair: dict[str, list[Decision]] = {}
    for d in decisions:
        by_annotator.setdefault(d.annotator, []).append(d)
        if d.choice != "skip":
            by_pair.setdefault(d.pair, []).append(d)
    rows = [_annotator_row(name, mine) for name, mine in sorted(by_annotator.items())]
    between = [_agreement(x, y, by_pair) for x, y in itertools.combinations(sorted(by_annotator), 2)]
    between = [row for row in between if row["pairs"]]
    shared = sum(row["pairs"] for row in between)
    gold = [_gold_hit(d) for d in decisions if _gold_hit(d) is not None]
    return {
        "pairs": total,
        "judged": len(by_pair),
        "overlapped": sum(len(ds) >= 2 for ds in by_pair.values()),
        "trainable": sum(majority(ds) is not None for ds in by_pair.values()),
        "decisions": len(decisions),
        "labels": sum(d.choice in ("a", "b") for d in decisions),
        "ties": sum(d.choice == "tie" for d in decisions),
        "skips": sum(d.choice == "skip" for d in decisions),
        "undone": undone,
        "agreement": sum(r["agreement"] * r["pairs"] for r in between) / shared if shared else None,
        "gold_agreement": sum(gold) / len(gold) if gold else None,
        "annotators": rows,
        "between": between,
        "comparisons": winrate.win_rates(decisions),
    }


def _annotator_row(name: str, mine: list[Decision]) -> dict[str, Any]:
    seconds = [d.seconds for d in mine]
    gold = [_gold_hit(d) for d in mine if _gold_hit(d) is not None]
    return {
        "annotator": name,
        "decisions": len(mine),
        "labels": sum(d.choice in ("a", "b") for d in mine),
        "ties": sum(d.choice == "tie" for d in mine),
        "skips": sum(d.choice == "skip" for d in mine),
        "median_seconds": statistics.median(seconds),
        "mean_seconds": statistics.fmean(seconds),
        "gold_pairs": len(gold),
        "gold_agreement": sum(gold) / len(gold) if gold else None,
    }


def _gold_hit(d: Decision) -> bool | None:
    """Whether a decision for one completion agrees with gold; None when either side is undecided."""
    verdict, gold = d.verdict(), d.gold_verdict()
    if verdict not in ("first", "second") or gold not in ("first", "second"):
        return None
    return verdict == gold


def _agreement(x: str, y: str, by_pair: dict[str, list[Decision]]) -> dict[str, Any]:
    """Agreement and Cohen's κ of annotators x and y on the pairs both judged."""
    both = []
    for ds in by_pair.values():
        verdicts = {d.annotator: d.verdict() for d in ds}
        if x in verdicts and y in verdicts:
            both.append((verdicts[x], verdicts[y]))
    n = len(both)
    row: dict[str, Any] = {"annotators": [x, y], "pairs": n, "agreement": None, "kappa": None}
    if not n:
        return row
    observed = sum(a == b for a, b in both) / n
    expected = sum((sum(a == v for a, _ in both) / n) * (sum(b == v for _, b in both) / n) for v in VERDICTS)
    row["agreement"] = observed
    row["kappa"] = (observed - expected) / (1 - expected) if expected < 1 else None
    return row


def metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The numbers of a summary as `label/<name>` metrics (result.json); the comparison served, if one
    was, as `label/judge/<name>` (human_win_rate, its _low and _high, gold_win_rate, …)."""
    keys = ("pairs", "judged", "overlapped", "trainable", "decisions", "labels", "ties", "skips", "undone")
    out = {f"label/{k}": float(summary[k]) for k in keys if summary[k] is not None}
    for k in ("agreement", "gold_agreement"):
        if summary[k] is not None:
            out[f"label/{k}"] = float(summary[k])
    served = summary.get("served")
    for row in summary.get("comparisons", []):
        if [row["a"], row["b"]] == served:
            out |= winrate.metrics(row, "label/judge")
    return out


# ------------------------------------------------------------------------------------------ rendering
ANNOTATOR_COLUMNS = (
    ("annotator", "annotator"),
    ("decisions", "decisions"),
    ("labels", "A or B"),
    ("ties", "ties"),
    ("skips", "skips"),
    ("median_seconds", "median s / label"),
    ("mean_seconds", "mean s / label"),
    ("gold_agreement", "agrees with gold"),
    ("gold_pairs", "gold pairs"),
)


def _cell(value: Any, key: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.0%}" if "agreement" in key else f"{value:.3g}" if key == "kappa" else f"{value:.1f}"
    if isinstance(value, list):
        return " & ".join(map(str, value))
    return str(value)


def tables(summary: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of the summary's three tables (after the blind comparisons' win rates, when
    the file has any), every cell as text."""
    s = summary
    totals = [
        ["pairs to label", _cell(s["pairs"])],
        ["pairs judged (A, B or tie)", _cell(s["judged"])],
        ["pairs judged by several annotators", _cell(s["overlapped"])],
        ["pairs labeler=file trains on", _cell(s["trainable"])],
        ["decisions (A, B, tie, skip)", _cell(s["decisions"])],
        ["ties", _cell(s["ties"])],
        ["skips", _cell(s["skips"])],
        ["undone", _cell(s["undone"])],
        ["agreement between annotators", _cell(s["agreement"], "agreement")],
        ["agreement with gold", _cell(s["gold_agreement"], "gold_agreement")],
    ]
    people = [[_cell(r[k], k) for k, _ in ANNOTATOR_COLUMNS] for r in s["annotators"]]
    between = [[_cell(r["annotators"]), _cell(r["pairs"]), _cell(r["agreement"], "agreement"),
                _cell(r["kappa"], "kappa")] for r in s["between"]]  # fmt: skip
    found = [
        ("In all", ["", ""], totals),
        ("Per annotator", [title for _, title in ANNOTATOR_COLUMNS], people),
        (
            "Between annotators, on the pairs both judged",
            ["annotators", "pairs", "agreement", "Cohen's κ"],
            between,
        ),
    ]
    if s.get("comparisons"):
        title = "Blind comparisons: win rate of A over B, ties half, 95% Wilson interval"
        found.insert(0, (title, winrate.HEADER, winrate.table_rows(s["comparisons"])))
    return found


def to_markdown(summary: dict[str, Any]) -> str:
    parts = []
    for title, header, rows in tables(summary):
        parts.append(f"### {title}\n")
        parts.append("| " + " | ".join(header) + " |")
        parts.append("|" + "---|" * len(header))
        parts.extend("| " + " | ".join(row) + " |" for row in rows or [["–"] * len(header)])
        parts.append("")
    return "\n".join(parts)


def to_html(summary: dict[str, Any], train: str) -> str:
    """The summary page, ending with the command that trains on the labels (or, for a blind comparison,
    reports its win rates); every value is escaped."""
    e = html.escape
    body = []
    for title, header, rows in tables(summary):
        head = "".join(f"<th>{e(h)}</th>" for h in header) if any(header) else ""
        cells = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows)
        empty = f'<tr><td colspan="{len(header)}">none yet</td></tr>'
        thead = f"<thead><tr>{head}</tr></thead>" if head else ""
        table = f"<table>{thead}<tbody>{cells or empty}</tbody></table>"
        body.append(f"<h2>{e(title)}</h2>\n{table}")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Labels: summary</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/static/label.css"></head>
<body class="summary"><header><h1>Labels so far</h1><a href="/">back to labeling</a></header>
<main>
{chr(10).join(body)}
<h2>{"Report the win rates" if summary.get("served") else "Train on them"}</h2>
<pre id="train-command">{e(train)}</pre>
</main></body></html>
"""
