"""Row formats (TRL's standard ones) and their validation.

- `text`:              {"text": str}                                   pretraining
- `prompt_completion`: {"prompt": str, "completion": str}              SFT
- `messages`:          {"messages": [{"role": str, "content": str}]}   SFT, rendered with the chat template
- `prompt`:            {"prompt": str}                                 collection, RL, evaluation
- `preference`:        {"prompt", "chosen", "rejected": str, "margin": float (optional)}   reward model

Every row is checked; a bad one raises a DataError naming the source, the row index (0-based) and
the field, or is skipped and counted with `data.on_bad_row=skip`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from rlhf_lab.config import SourceConfig
from rlhf_lab.data.sources import DataError, load_source
from rlhf_lab.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    """One training example as text: the loss is on `completion` only (all of it for `text` rows)."""

    prompt: str
    completion: str


@dataclass(frozen=True)
class PreferencePair:
    """A labelled comparison: `chosen` was preferred to `rejected` for `prompt`."""

    prompt: str
    chosen: str
    rejected: str
    margin: float = 0.0
    gold_chosen: float | None = None  # gold scores, when the pair was collected in a world with a gold scorer
    gold_rejected: float | None = None
    group: int | None = None  # which sampling of the prompt the pair came from (collect writes it)


class BadRow(UserError):
    def __init__(self, field: str, reason: str):
        super().__init__(f"field '{field}': {reason}")
        self.field = field


def detect_format(columns: Iterable[str]) -> str:
    columns = set(columns)
    for fmt, needed in (
        ("preference", {"prompt", "chosen", "rejected"}),
        ("messages", {"messages"}),
        ("prompt_completion", {"prompt", "completion"}),
        ("text", {"text"}),
        ("prompt", {"prompt"}),
    ):
        if needed <= columns:
            return fmt
    raise DataError(
        f"cannot tell the row format from the columns {sorted(columns)}: expected "
        "'text', 'prompt' and 'completion', 'messages', 'prompt', or 'prompt', 'chosen' and 'rejected'"
    )


def _text(row: dict, field: str) -> str:
    if field not in row or row[field] is None:
        raise BadRow(field, "missing")
    value = row[field]
    if not isinstance(value, str):
        raise BadRow(field, f"expected a string, got {type(value).__name__}")
    if not value.strip():
        raise BadRow(field, "empty")
    return value


def _from_text(row: dict, tokenizer) -> Example:
    return Example("", _text(row, "text"))


def _from_prompt_completion(row: dict, tokenizer) -> Example:
    return Example(_text(row, "prompt"), _text(row, "completion"))


def _from_messages(row: dict, tokenizer) -> Example:
    """Prompt: the conversation before the last (assistant) turn plus the generation prompt.

    Completion: the rest of the rendered conversation.
    """
    messages = row.get("messages")
    if not isinstance(messages, list) or len(messages) < 2:
        raise BadRow("messages", "expected a list of at least two {role, content} messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadRow(f"messages[{i}]", "expected a {role, content} object")
        _text(message, "role"), _text(message, "content")
    if messages[-1]["role"] != "assistant":
        raise BadRow(f"messages[{len(messages) - 1}].role", "the last message must be the assistant's")
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    if not full.startswith(prompt):
        raise BadRow(
            "messages", "the chat template does not render the prompt as a prefix of the conversation"
        )
    return Example(prompt, full[len(prompt) :])


def _from_prompt(row: dict, tokenizer) -> Example:
    return Example(_text(row, "prompt"), "")


def _from_preference(row: dict, tokenizer) -> PreferencePair:
    prompt, chosen, rejected = _text(row, "prompt"), _text(row, "chosen"), _text(row, "rejected")
    if chosen == rejected:
        raise BadRow("rejected", "identical to 'chosen': the pair says nothing")
    margin = row.get("margin")
    if margin is not None and (isinstance(margin, bool) or not isinstance(margin, (int, float))):
        raise BadRow("margin", f"expected a number, got {type(margin).__name__}")
    gold = [row.get(k) for k in ("gold_chosen", "gold_rejected")]
    gold = [float(g) if isinstance(g, (int, float)) and not isinstance(g, bool) else None for g in gold]
    group = row.get("group")
    group = group if isinstance(group, int) and not isinstance(group, bool) else None
    return PreferencePair(prompt, chosen, rejected, float(margin or 0.0), *gold, group)


PARSERS: dict[str, Callable[[dict, object], Example | PreferencePair]] = {
    "text": _from_text,
    "prompt_completion": _from_prompt_completion,
    "messages": _from_messages,
    "prompt": _from_prompt,
    "preference": _from_preference,
}


# The columns each format reads; others are kept by the dataset but not used, and named once in the log.
FIELDS = {
    "text": {"text"},
    "prompt_completion": {"prompt", "completion"},
    "messages": {"messages"},
    "prompt": {"prompt"},
    "preference": {"prompt", "chosen", "rejected", "margin", "gold_chosen", "gold_rejected", "group"}
    | {"labeler", "policy", "annotator"},  # provenance columns written by the collect stage
}


def read_examples(src: SourceConfig, default, tokenizer, on_bad_row: str) -> tuple[list, str]:
    """Load a source (`default` when its path is null) and parse its rows; also return its name."""
    ds, name = load_source(src, default)
    fmt = detect_format(ds.column_names) if src.format == "auto" else src.format
    ignored = sorted(set(ds.column_names) - FIELDS[fmt])
    if ignored:
        log.warning("%s: columns %s are not part of the %s format and are ignored", name, ignored, fmt)
    return parse_rows(ds, fmt, name, tokenizer, on_bad_row), name


def parse_rows(rows: Iterable[dict], fmt: str, source: str, tokenizer, on_bad_row: str) -> list:
    """Parse and validate rows into Examples or PreferencePairs; raise on a bad row, or skip and count."""
    parse = PARSERS[fmt]
    examples, skipped, first_error = [], 0, None
    for i, row in enumerate(rows):
        try:
            examples.append(parse(row, tokenizer))
        except BadRow as err:
            message = f"{source}: row {i}, {err}"
            if on_bad_row == "error":
                raise DataError(message + "  (data.on_bad_row=skip skips such rows)") from None
            skipped, first_error = skipped + 1, first_error or message
    report_skipped(source, skipped, len(examples) + skipped, first_error)
    return examples


def report_skipped(source: str, skipped: int, total: int, first_error: str | None) -> None:
    if skipped:
        log.warning("%s: skipped %d of %d rows (first: %s)", source, skipped, total, first_error)
    if total and skipped == total:
        raise DataError(f"{source}: every one of its {total} rows is bad (first: {first_error})")
