"""Reading rows through `datasets`: hub names, JSON/JSONL/Parquet/CSV files, `save_to_disk` folders."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import datasets

from rlhf_lab.config import SourceConfig
from rlhf_lab.errors import UserError

BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


class DataError(UserError, ValueError):
    """Bad input data; the message names the file (or dataset), the row and the field."""


class BadRow(UserError):
    """One field of one row is bad; the reader adds the source and the row (`source: row 3, field ...`)."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"field '{field}': {reason}")
        self.field = field


def hub_unreachable(path: str, key: str, err: Exception) -> DataError:
    """The message for a hub dataset that cannot be fetched: what to download, and where to point."""
    return DataError(
        f"{path}: the Hugging Face hub is unreachable, and no local copy was given ({err}). Where there "
        f"is network, save it: `datasets.load_dataset({path!r}).save_to_disk(FOLDER)` (or download its "
        f"files); then set {key}.path=FOLDER (a JSON/JSONL/Parquet/CSV file works too)"
    )


def load_source(
    src: SourceConfig, default: str | Path | None = None, key: str = "data.<source>"
) -> tuple[datasets.Dataset, str]:
    """Load the rows of `src` (or of `default` when `src.path` is null) and a name for messages; `key`
    names the source's setting in messages (`data.preferences`)."""
    path = src.path or default
    if path is None:
        raise DataError(f"no dataset given: set {key}.path (a file, a folder or a hub name)")
    path = str(path)
    local = Path(path).expanduser()
    if not local.exists() and (local.suffix.lower() in BUILDERS or path.startswith(("/", ".", "~"))):
        raise DataError(f"{path}: no such file or folder ({key}.path)")
    try:
        if local.is_file():
            ds = _load_file(local)
        elif (local / "dataset_info.json").is_file() or (local / "dataset_dict.json").is_file():
            ds = datasets.load_from_disk(str(local))
            ds = ds[src.split] if isinstance(ds, datasets.DatasetDict) else ds
        else:  # a folder of data files, or a hub dataset
            ds = datasets.load_dataset(path, src.name, split=src.split)
    except DataError:
        raise
    except ConnectionError as err:  # datasets' "Couldn't reach '<name>' on the Hub"
        raise hub_unreachable(path, key, err) from err
    except Exception as err:  # datasets' own errors rarely say which row broke
        raise DataError(f"{path}: could not be read as a dataset: {err}") from err
    if src.max_rows is not None:
        ds = ds.select(range(min(src.max_rows, len(ds))))
    return ds, path


def _load_file(path: Path) -> datasets.Dataset:
    builder = BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise DataError(f"{path}: unknown file type {path.suffix!r}; use one of {', '.join(BUILDERS)}")
    if builder == "json":
        _check_json_lines(path)
    return datasets.load_dataset(builder, data_files=str(path), split="train")


def iter_json_lines(path: Path, name: str | None = None) -> Iterator[tuple[int, dict]]:
    """(row, object) for each non-blank line of a JSONL file; the row is the 0-based line number.

    Raises a DataError naming the file and row for invalid UTF-8, invalid JSON or a non-object line.
    """
    name = name or str(path)
    with open(path, "rb") as f:
        for i, raw in enumerate(f):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as err:
                raise DataError(f"{name}: row {i}: invalid UTF-8 ({err.reason})") from err
            except json.JSONDecodeError as err:
                raise DataError(f"{name}: row {i}: invalid JSON ({err.msg})") from err
            if not isinstance(row, dict):
                raise DataError(f"{name}: row {i}: expected a JSON object, got {type(row).__name__}")
            yield i, row


def _check_json_lines(path: Path) -> None:
    """Name the first bad line of a JSONL file, including a field that changes type from earlier rows
    (which `datasets` reports without a row number)."""
    with open(path, "rb") as f:
        if f.read(1).strip() == b"[":  # a JSON array file: let datasets parse it
            return
    types: dict[str, type] = {}
    for i, row in iter_json_lines(path):
        for key, value in row.items():
            if value is None:
                continue
            seen = types.setdefault(key, type(value))
            if seen is not type(value) and {seen, type(value)} != {int, float}:
                raise DataError(
                    f"{path}: row {i}, field '{key}': expected {seen.__name__} "
                    f"as in earlier rows, got {type(value).__name__}"
                )
