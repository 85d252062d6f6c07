"""Row formats (TRL's standard ones) and their validation.

- `text`:              {"text": str}                                   pretraining
- `prompt_completion`: {"prompt": str, "completion": str}              SFT
- `messages`:          {"messages": [{"role": str, "content": str}]}   SFT, rendered with the chat template

Every row is checked; a bad one raises a DataError naming the source, the row index (0-based) and
the field, or is skipped and counted with `data.on_bad_row=skip`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from rlhf_lab.data.sources import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    """One training example as text: the loss is on `completion` only (all of it for `text` rows)."""

    prompt: str
    completion: str


class BadRow(Exception):
    def __init__(self, field: str, reason: str):
        super().__init__(f"field '{field}': {reason}")
        self.field = field


def detect_format(columns: Iterable[str]) -> str:
    columns = set(columns)
    for fmt, needed in (
        ("messages", {"messages"}),
        ("prompt_completion", {"prompt", "completion"}),
        ("text", {"text"}),
    ):
        if needed <= columns:
            return fmt
    raise DataError(
        f"cannot tell the row format from the columns {sorted(columns)}: expected "
        "'text', 'prompt' and 'completion', or 'messages'"
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


PARSERS: dict[str, Callable[[dict, object], Example]] = {
    "text": _from_text,
    "prompt_completion": _from_prompt_completion,
    "messages": _from_messages,
}


def parse_rows(rows: Iterable[dict], fmt: str, source: str, tokenizer, on_bad_row: str) -> list[Example]:
    """Parse and validate rows into Examples; raise on the first bad row, or skip and count them."""
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
