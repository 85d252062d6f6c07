"""The label file: one JSON object a line, appended by the labeling page and never rewritten.

Two events, each naming an annotator and a pair (`pair_id`: a hash of the prompt and both completions):

    {"event": "label", "request": "4f0c…", "annotator": "ana", "pair": "9b1e…", "prompt": "…",
     "completion_a": "<shown left>", "completion_b": "<shown right>", "choice": "a" | "b" | "tie" | "skip",
     "seconds": 4.2, "time": "2026-11-01T10:00:00.123Z", "gold_a": 0.4, "gold_b": -0.1}
    {"event": "undo", "request": "77aa…", "annotator": "ana", "pair": "9b1e…", "time": "…"}

`completion_a` is the completion the page showed on the left, so the file records the order each pair
was shown in; gold_a and gold_b are present when the pairs carry gold scores. A blind comparison of two
policies (`label.judge`, `rlhf_lab/report/judge.py`) adds which policy wrote each shown completion and
the proxy's scores, so that the file alone gives the win rate (`winrate.py`):

    {..., "comparison": ["<policy A>", "<policy B>"], "policy_a": "<B: shown left>", "policy_b": "<A>",
     "proxy_a": 0.3, "proxy_b": 0.9}

Replaying the events in order (`Ledger`) gives each annotator's *standing* decisions: a label stands
until an undo by the same annotator names its pair. `request` is the page's id for the request, so
that a retried request (its answer lost to a crash) is recognized rather than applied twice.

`fold` is how `labeler=file` reads the file: one row (prompt, completion_a, completion_b, choice) per
pair whose standing "a"/"b" choices favour one completion; ties abstain; skips, undone labels and
even splits between annotators give no row.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

from rlhf_lab.errors import UserError

CHOICES = ("a", "b", "tie", "skip")
MAX_NAME = 64  # characters of an annotator's name
MAX_SECONDS = 24 * 3600.0  # the longest time one decision may report


class LabelFileError(UserError, ValueError):
    """A line of a label file is not an event the labeling page writes; the message names row and field."""


def pair_id(prompt: str, a: str, b: str) -> str:
    """16 hex digits of a hash of the prompt and the two completions in sorted order: one id per pair,
    whichever completion comes first."""
    h = hashlib.blake2b(digest_size=8)
    for part in (prompt, *sorted((a, b))):
        data = part.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def name_problem(name: Any) -> str | None:
    """Why `name` cannot be an annotator's name, or None: 1 to 64 characters, no control characters,
    no space at either end."""
    if not isinstance(name, str):
        return f"expected a string, got {type(name).__name__}"
    if not name or name != name.strip():
        return "empty, or with spaces at either end"
    if len(name) > MAX_NAME:
        return f"longer than {MAX_NAME} characters"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "contains control characters"
    return None


@dataclass(frozen=True)
class Decision:
    """One standing label event: an annotator's choice on a pair, as it was shown."""

    row: int  # 0-based line of the file
    request: str
    annotator: str
    pair: str
    prompt: str
    completion_a: str  # shown left
    completion_b: str  # shown right
    choice: str
    seconds: float
    time: str
    gold_a: float | None = None
    gold_b: float | None = None
    comparison: tuple[str, str] | None = None  # a blind comparison's policies, A then B
    policy_a: str | None = None  # which of them wrote completion_a
    policy_b: str | None = None
    proxy_a: float | None = None
    proxy_b: float | None = None

    @property
    def first(self) -> str:
        """The completion that comes first in sorted order (the pair's orientation everywhere else)."""
        return min(self.completion_a, self.completion_b)

    def verdict(self) -> str:
        """'first', 'second' (which completion of the sorted pair is preferred), 'tie' or 'skip'."""
        if self.choice in ("tie", "skip"):
            return self.choice
        chosen = self.completion_a if self.choice == "a" else self.completion_b
        return "first" if chosen == self.first else "second"

    def gold_verdict(self) -> str | None:
        """The gold ordering as a verdict ('first', 'second', 'tie'), or None without gold scores."""
        if self.gold_a is None or self.gold_b is None:
            return None
        if self.gold_a == self.gold_b:
            return "tie"
        a_wins = self.gold_a > self.gold_b
        return "first" if (self.completion_a == self.first) == a_wins else "second"


@dataclass
class Ledger:
    """The replayed label file: standing decisions and the requests already applied."""

    standing: dict[tuple[str, str], Decision] = field(default_factory=dict)  # (annotator, pair), in order
    stacks: dict[str, list[str]] = field(default_factory=dict)  # annotator -> pairs of standing decisions
    requests: dict[str, tuple[str, str, str, str]] = field(default_factory=dict)  # id -> event key
    undone: int = 0  # undo events so far

    def add(self, decision: Decision) -> None:
        self.standing[(decision.annotator, decision.pair)] = decision
        self.stacks.setdefault(decision.annotator, []).append(decision.pair)
        self.requests[decision.request] = ("label", decision.annotator, decision.pair, decision.choice)

    def undo(self, request: str, annotator: str, pair: str) -> Decision:
        decision = self.standing.pop((annotator, pair))
        self.stacks[annotator].remove(pair)
        self.requests[request] = ("undo", annotator, pair, "")
        self.undone += 1
        return decision

    def last(self, annotator: str) -> Decision | None:
        """The annotator's latest standing decision (what an undo would take back)."""
        stack = self.stacks.get(annotator)
        return self.standing[(annotator, stack[-1])] if stack else None

    def decisions(self) -> list[Decision]:
        return list(self.standing.values())


def replay(path: str, rows: list[tuple[int, dict[str, Any]]]) -> Ledger:
    """The ledger of a label file's (row number, event) rows, each event checked."""
    ledger = Ledger()
    for i, row in rows:
        event = row.get("event")
        where = f"{path}: row {i}"
        if event == "label":
            decision = parse_label(where, i, row)
            if (decision.annotator, decision.pair) in ledger.standing:
                raise LabelFileError(f"{where}, field 'pair': labeled again by {decision.annotator!r}")
            ledger.add(decision)
        elif event == "undo":
            annotator, pair, request = (_text(where, row, k) for k in ("annotator", "pair", "request"))
            if (annotator, pair) not in ledger.standing:
                raise LabelFileError(f"{where}, field 'pair': {annotator!r} has no label on it to undo")
            ledger.undo(request, annotator, pair)
        else:
            raise LabelFileError(f"{where}, field 'event': expected 'label' or 'undo', got {event!r}")
    return ledger


def parse_label(where: str, i: int, row: dict[str, Any]) -> Decision:
    """A label event's fields, checked; errors name the field."""
    texts = {k: _text(where, row, k) for k in ("request", "pair", "prompt", "completion_a", "completion_b")}
    problem = name_problem(row.get("annotator"))
    if problem:
        raise LabelFileError(f"{where}, field 'annotator': {problem}")
    if row.get("choice") not in CHOICES:
        raise LabelFileError(f"{where}, field 'choice': expected one of {', '.join(CHOICES)}")
    if texts["completion_a"] == texts["completion_b"]:
        raise LabelFileError(f"{where}, field 'completion_b': identical to completion_a")
    if texts["pair"] != pair_id(texts["prompt"], texts["completion_a"], texts["completion_b"]):
        raise LabelFileError(f"{where}, field 'pair': not the id of this prompt and these completions")
    seconds = row.get("seconds")
    if not _number(seconds) or not 0 <= seconds <= MAX_SECONDS:
        raise LabelFileError(f"{where}, field 'seconds': expected a number in [0, {MAX_SECONDS:g}]")
    scores = {k: row.get(k) for k in ("gold_a", "gold_b", "proxy_a", "proxy_b")}
    for key, value in scores.items():
        if value is not None and not _number(value):
            raise LabelFileError(f"{where}, field '{key}': expected a finite number or null")
    return Decision(row=i, annotator=row["annotator"], choice=row["choice"], seconds=float(seconds),
                    time=str(row.get("time", "")), **scores, **_judged(where, row), **texts)  # fmt: skip


def _judged(where: str, row: dict[str, Any]) -> dict[str, Any]:
    """A blind comparison's fields (comparison, policy_a, policy_b), checked; none on other labels."""
    if all(row.get(k) is None for k in ("comparison", "policy_a", "policy_b")):
        return {}
    names = row.get("comparison")
    names = names if isinstance(names, list) else []
    if len(names) != 2 or not all(isinstance(n, str) and n for n in names) or names[0] == names[1]:
        raise LabelFileError(f"{where}, field 'comparison': expected two policies' names, A then B")
    shown = (_text(where, row, "policy_a"), _text(where, row, "policy_b"))
    if sorted(shown) != sorted(names):
        raise LabelFileError(f"{where}, field 'policy_b': expected the comparison's other policy")
    return {"comparison": tuple(names), "policy_a": shown[0], "policy_b": shown[1]}


def _text(where: str, row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value:
        raise LabelFileError(f"{where}, field '{key}': expected a non-empty string")
    return value


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ---------------------------------------------------------------------------- what labeler=file reads
def is_label_log(columns: list[str]) -> bool:
    """Whether a table with these columns is a label file of the labeling page (its rows are events)."""
    return "event" in columns


def majority(decisions: list[Decision]) -> str | None:
    """'first' or 'second' when more of the decisions prefer that completion, else None."""
    verdicts = [d.verdict() for d in decisions]
    first, second = verdicts.count("first"), verdicts.count("second")
    return None if first == second else ("first" if first > second else "second")


def fold(path: str, rows: list[tuple[int, dict[str, Any]]]) -> list[tuple[int, dict[str, Any]]]:
    """The rows `labeler=file` reads from a label file: (row of the pair's latest standing decision,
    {prompt, completion_a, completion_b, choice}) for each pair with a majority (see `majority`)."""
    by_pair: dict[str, list[Decision]] = {}
    for decision in replay(path, rows).decisions():
        by_pair.setdefault(decision.pair, []).append(decision)
    out = []
    for decisions in by_pair.values():
        winner, latest = majority(decisions), max(decisions, key=lambda d: d.row)
        if winner is None:
            continue
        a_is_first = latest.completion_a == latest.first
        choice = "a" if (winner == "first") == a_is_first else "b"
        keep = {k: getattr(latest, k) for k in ("prompt", "completion_a", "completion_b")}
        out.append((latest.row, keep | {"choice": choice}))
    if not out:
        raise LabelFileError(
            f"{path}: no pair has a standing 'a' or 'b' label yet ({len(rows)} events: ties, skips, "
            "undone labels or even splits between annotators)"
        )
    return sorted(out, key=lambda item: item[0])
