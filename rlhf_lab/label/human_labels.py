"""A file of human labels for `labeler=file`: a CSV, JSONL or Parquet table (or anything `load_source`
reads) with exactly the columns prompt, completion_a, completion_b, choice ("a" or "b"), each row
validated with the file, row and field named; or the labeling page's label file, read through
`rlhf_lab.label.records.fold`."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from rlhf_lab.config import SourceConfig
from rlhf_lab.data.sources import DataError, iter_json_lines, load_source
from rlhf_lab.label.records import fold, is_label_log

COLUMNS = ("prompt", "completion_a", "completion_b", "choice")
CHOICES = {"a": 1, "b": 0}  # the `choice` column: exactly the string "a" or "b"
EXPECTED = f"expected columns {', '.join(COLUMNS)}"


def read_labels(path: str) -> dict[tuple[str, str, str], tuple[int, int]]:
    """(prompt, first, second) with the completions in sorted order -> (1 if first is preferred else 0,
    the row it came from), every row validated; conflicting rows for one pair are an error."""
    columns, rows = _read_table(path)
    if is_label_log(columns):  # the labeling page's file (rlhf_lab/label): each pair's standing verdict
        columns, rows = list(COLUMNS), fold(path, rows)
    _check_columns(path, columns, rows)
    labels: dict[tuple[str, str, str], tuple[int, int]] = {}
    for i, row in rows:
        prompt, a, b, choice = _check_row(path, i, row)
        a_first = a <= b
        key = (prompt, a, b) if a_first else (prompt, b, a)
        value = choice if a_first else 1 - choice
        seen = labels.setdefault(key, (value, i))
        if seen[0] != value:
            raise DataError(
                f"{path}: rows {seen[1]} and {i}, field 'choice': conflicting choices for the same prompt "
                "and pair of completions"
            )
    return labels


Rows = list[tuple[int, dict[str, Any]]]


def _read_table(path: str) -> tuple[list[str], Rows]:
    """Column names and (row number, row) pairs."""
    local = Path(path).expanduser()
    if not local.exists():
        raise DataError(f"{path}: no such file")
    suffix = local.suffix.lower() if local.is_file() else ""
    if suffix == ".csv":
        return _read_csv(path, local)
    if suffix == ".jsonl":
        return _read_jsonl(path, local)
    ds, _ = load_source(SourceConfig(path=str(local)))
    return list(ds.column_names), list(enumerate(ds.to_list()))


def _read_csv(path: str, local: Path) -> tuple[list[str], Rows]:
    """Every cell as text: no type guessing, so "NA" or "42" stay strings (pandas would change them)."""
    rows: Rows = []
    try:
        with open(local, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path}: empty file; expected a header row {','.join(COLUMNS)}")
            for cells in reader:
                if cells:  # skip blank lines
                    rows.append((len(rows), _csv_row(header, cells)))
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: row {len(rows)}: invalid UTF-8 ({err.reason})") from err
    except csv.Error as err:
        raise DataError(f"{path}: row {len(rows)}: invalid CSV ({err})") from err
    dup = next((c for c in header if header.count(c) > 1), None)
    if dup is not None:
        raise DataError(f"{path}: header: column '{dup}' appears more than once")
    return header, rows


def _csv_row(header: list[str], cells: list[str]) -> dict[str, Any]:
    row: dict[str, Any] = dict(zip(header, cells, strict=False))  # short rows lack their last fields
    row.update({f"column {j}": cells[j] for j in range(len(header), len(cells))})
    return row


def _read_jsonl(path: str, local: Path) -> tuple[list[str], Rows]:
    """One JSON object a line; the row number is the 0-based line (blank lines skipped, still counted)."""
    rows: Rows = list(iter_json_lines(local, path))
    columns: dict[str, None] = {}
    for _, row in rows:
        columns.update(dict.fromkeys(row))
    return list(columns), rows


def _check_columns(path: str, columns: list[str], rows: Rows) -> None:
    if not rows:
        raise DataError(f"{path}: no rows; {EXPECTED}")
    first = rows[0][0]
    for col in COLUMNS:
        if col not in columns:
            raise DataError(f"{path}: row {first}, field '{col}': missing column; {EXPECTED}")
    for col in columns:
        if col not in COLUMNS:
            i = next((i for i, r in rows if r.get(col) is not None), first)
            raise DataError(f"{path}: row {i}, field '{col}': unexpected column; {EXPECTED}")


def _check_row(path: str, i: int, row: dict[str, Any]) -> tuple[str, str, str, int]:
    """(prompt, completion_a, completion_b, 1 if a is preferred else 0), or a DataError naming the field."""

    def where(field: str) -> str:
        return f"{path}: row {i}, field '{field}'"

    for key, value in row.items():
        if key not in COLUMNS and value is not None:
            raise DataError(f"{where(key)}: unexpected field; {EXPECTED}")
    for field in COLUMNS:
        value = row.get(field)
        if value is None:
            raise DataError(f"{where(field)}: missing or null")
        if not isinstance(value, str):
            raise DataError(f"{where(field)}: expected a string, got {type(value).__name__} {_show(value)}")
        if not value:
            raise DataError(f"{where(field)}: empty string")
    if row["completion_a"] == row["completion_b"]:
        raise DataError(f"{where('completion_b')}: identical to completion_a; a pair needs two completions")
    if row["choice"] not in CHOICES:
        raise DataError(f'{where("choice")}: expected "a" or "b", got {_show(row["choice"])}')
    return row["prompt"], row["completion_a"], row["completion_b"], CHOICES[row["choice"]]


def _show(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
