"""The pairs to label: read from a collect artifact (its preferences.jsonl) or from a file of prompt and
two completions; each with its id, its place in the labeling order, and which completion is shown left.

Columns of a file: `prompt` and either `completion_a`, `completion_b` or `chosen`, `rejected` (a TRL
preference file: which one was chosen is not shown, and not used); gold scores, when present, as
`gold_a`, `gold_b` or `gold_chosen`, `gold_rejected`. A blind comparison of two policies (written by
`rlhf_lab/report/judge.py`) adds `policy_a`, `policy_b` (the policies A and B that wrote completion_a
and completion_b) and `proxy_a`, `proxy_b`. JSONL and CSV are read here; other formats (Parquet,
JSON, a `save_to_disk` folder) through `datasets`. A pair that appears twice is labeled once.
Conversational rows (TRL's message lists, as collect writes for chat prompts) are shown and recorded as
the text `labeler=file` matches them by: the prompt as `data.chat.display` writes it, each completion
as its assistant message's content.

Every draw is a hash of (seed, purpose, pair id), so the order, the sides and the overlap are the same
at every start and do not depend on the order of the file.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf_lab.errors import UserError
from rlhf_lab.label.records import pair_id

COLUMN_SETS = (
    ("completion_a", "completion_b", "gold_a", "gold_b"),
    ("chosen", "rejected", "gold_chosen", "gold_rejected"),
)


class PairsError(UserError, ValueError):
    """The pairs to label cannot be read; the message names the file, the row and the field."""


@dataclass(frozen=True)
class Pair:
    """A prompt and two completions, in sorted order (`first` < `second`), with their gold scores; in a
    blind comparison, also which policy wrote each, the comparison's policies (A, B) and proxy scores."""

    id: str
    prompt: str
    first: str
    second: str
    gold_first: float | None = None
    gold_second: float | None = None
    comparison: tuple[str, str] | None = None
    policy_first: str | None = None
    policy_second: str | None = None
    proxy_first: float | None = None
    proxy_second: float | None = None

    def shown(self, seed: int) -> dict[str, Any]:
        """The pair as the page shows it: completion_a left, completion_b right (a fair coin per pair),
        with their gold scores (and, in a blind comparison, their policies and proxy scores, which the
        page never shows)."""
        left_first = unit(seed, "side", self.id) < 0.5
        out = {"prompt": self.prompt}
        fields = [("completion", "first", "second"), ("gold", "gold_first", "gold_second")]
        if self.comparison is not None:
            fields += [("policy", "policy_first", "policy_second"), ("proxy", "proxy_first", "proxy_second")]
        for name, first, second in fields:
            left, right = (first, second) if left_first else (second, first)
            out[f"{name}_a"], out[f"{name}_b"] = getattr(self, left), getattr(self, right)
        return out if self.comparison is None else out | {"comparison": list(self.comparison)}


def unit(seed: int, purpose: str, key: str) -> float:
    """A float in [0, 1) from a hash of (seed, purpose, key)."""
    digest = hashlib.blake2b(f"{seed}\0{purpose}\0{key}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "little") >> 11) * 2.0**-53


def ordered(pairs: list[Pair], seed: int) -> list[Pair]:
    """The labeling order: the pairs shuffled by seed (prompts mixed: a partial labeling covers many)."""
    return sorted(pairs, key=lambda p: (unit(seed, "order", p.id), p.id))


def overlapped(pair: Pair, seed: int, share: float) -> bool:
    """Whether `pair` is among the `share` of pairs that several annotators label."""
    return unit(seed, "overlap", pair.id) < share


# ------------------------------------------------------------------------------------------ reading
def load_pairs(source: str) -> list[Pair]:
    """The distinct pairs of a collect artifact folder or a file; errors name file, row and field."""
    path = Path(source).expanduser()
    if path.is_dir() and (path / "preferences.jsonl").is_file():
        path = path / "preferences.jsonl"
    if not path.exists():
        raise PairsError(f"label.pairs: {source}: no such file or folder")
    rows = _read_rows(path)
    pairs: dict[str, Pair] = {}
    for i, row in rows:
        pair = _pair(str(path), i, row)
        pairs.setdefault(pair.id, pair)
    if not pairs:
        raise PairsError(f"label.pairs: {path}: no pairs to label")
    return list(pairs.values())


def _read_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    suffix = path.suffix.lower() if path.is_file() else ""
    try:
        if suffix == ".jsonl":
            with open(path, encoding="utf-8") as f:
                return [(i, _object(path, i, line)) for i, line in enumerate(f) if line.strip()]
        if suffix == ".csv":
            with open(path, encoding="utf-8-sig", newline="") as f:
                return list(enumerate(csv.DictReader(f)))
    except UnicodeDecodeError as err:
        raise PairsError(f"{path}: invalid UTF-8 ({err.reason})") from err
    from rlhf_lab.config import SourceConfig  # other formats through `datasets` (slower to import)
    from rlhf_lab.data.sources import load_source

    dataset, _ = load_source(SourceConfig(path=str(path)))
    return list(enumerate(dataset.to_list()))


def _object(path: Path, i: int, line: str) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise PairsError(f"{path}: row {i}: invalid JSON ({err.msg})") from err
    if not isinstance(row, dict):
        raise PairsError(f"{path}: row {i}: expected a JSON object")
    return row


def _pair(path: str, i: int, row: dict[str, Any]) -> Pair:
    columns = next((c for c in COLUMN_SETS if c[0] in row or c[1] in row), COLUMN_SETS[0])
    a_key, b_key, ga_key, gb_key = columns
    texts = [_text(path, i, row, k) for k in ("prompt", a_key, b_key)]
    prompt, a, b = texts
    if a == b:
        raise PairsError(f"{path}: row {i}, field '{b_key}': identical to '{a_key}'; nothing to compare")
    ga, gb = _gold(path, i, row, ga_key), _gold(path, i, row, gb_key)
    (first, g1), (second, g2) = sorted(((a, ga), (b, gb)), key=lambda t: t[0])
    pair = Pair(pair_id(prompt, a, b), prompt, first, second, g1, g2)
    return _judged(path, i, row, pair, a_first=a == first) if "policy_a" in row else pair


def _judged(path: str, i: int, row: dict[str, Any], pair: Pair, a_first: bool) -> Pair:
    """`pair` with a blind comparison's policies (A wrote completion_a) and proxy scores."""
    policies = (_text(path, i, row, "policy_a"), _text(path, i, row, "policy_b"))
    if policies[0] == policies[1]:
        raise PairsError(f"{path}: row {i}, field 'policy_b': the same policy as 'policy_a'")
    proxies = (_gold(path, i, row, "proxy_a"), _gold(path, i, row, "proxy_b"))
    order = (0, 1) if a_first else (1, 0)
    return dataclasses.replace(
        pair,
        comparison=policies,
        policy_first=policies[order[0]],
        policy_second=policies[order[1]],
        proxy_first=proxies[order[0]],
        proxy_second=proxies[order[1]],
    )


def _text(path: str, i: int, row: dict[str, Any], key: str) -> str:
    if key not in row:
        raise PairsError(
            f"{path}: row {i}, field '{key}': missing; expected prompt and completion_a, completion_b "
            "(or chosen, rejected)"
        )
    value = row[key]
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        value = _conversation_text(value, prompt=key == "prompt")
    if not isinstance(value, str) or not value.strip():
        raise PairsError(f"{path}: row {i}, field '{key}': expected a non-empty string, got {value!r:.40}")
    return value


def _conversation_text(messages: list[dict[str, Any]], prompt: bool) -> Any:
    """A prompt's messages as `display` shows them; a completion's one message as its content."""
    from rlhf_lab.data.chat import display, plain  # conversations only: its import is slower

    if prompt:
        return display(messages)
    if len(messages) == 1:
        return messages[0].get("content")
    return plain(messages, generation_prompt=False).lstrip("\n")


def _gold(path: str, i: int, row: dict[str, Any], key: str) -> float | None:
    value = row.get(key)
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number):
        raise PairsError(f"{path}: row {i}, field '{key}': expected a finite number, got {value!r:.40}")
    return number
