"""Row formats: every TRL format, standard (strings) or conversational (message lists), and their checks.

| format | standard | conversational |
|---|---|---|
| `text` (language modeling) | {"text"} | `messages`: {"messages": [{role, content}, ...]} |
| `prompt` (prompt-only) | {"prompt": str} | {"prompt": [messages]} |
| `prompt_completion` | {"prompt", "completion": str} | {"prompt": [messages], "completion": [messages]} |
| `preference` | {"prompt", "chosen", "rejected": str} | the same as message lists |
| `preference`, implicit prompt | {"chosen", "rejected": str} | {"chosen", "rejected": [messages]} |

Preference rows may carry a `margin` (and the collect stage's gold_chosen, gold_rejected, group). A
classic dataset's native layout (`data.presets`) is mapped to one of these first. `format=auto` picks
the format from the columns and the value types, and the log says which it picked.

Everything becomes text before a stage sees it (`data.chat`: a conversational prompt is rendered with
the tokenizer's chat template and its generation prompt, a completion is the assistant turn(s) that
follow it), so SFT, the reward model and DPO read `Example`s and `PreferencePair`s of strings. The
prompts that collect, RL, best-of-n and eval sample from stay as they are (`read_prompts`: a string or
a message list) until the policy's tokenizer renders them (`data.prompts.encode_prompts`).

Every row is checked; a bad one raises a DataError naming the source, the row index (0-based) and
the field, or is skipped and counted with `data.on_bad_row=skip`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from rlhf_lab.config import SourceConfig
from rlhf_lab.data.chat import (
    Prompt,
    check_messages,
    is_conversation,
    render_completion,
    render_prompt,
    split_implicit,
)
from rlhf_lab.data.presets import NATIVE, detect_native
from rlhf_lab.data.sources import BadRow, DataError, load_source

__all__ = ["BadRow", "Example", "PreferencePair", "read_examples", "read_prompts", "detect_format"]
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


# ------------------------------------------------------------------------------ detection
COLUMNS = (  # the columns that name a TRL format, tried in this order
    ("preference", {"chosen", "rejected"}),
    ("messages", {"messages"}),
    ("prompt_completion", {"prompt", "completion"}),
    ("text", {"text"}),
    ("prompt", {"prompt"}),
)
MAIN = {"preference": "chosen", "messages": "messages", "prompt_completion": "prompt", "prompt": "prompt"}


@dataclass(frozen=True)
class Layout:
    """How a source's rows are laid out: a TRL format, its form, and the classic layout mapped to it."""

    format: str
    conversational: bool = False
    implicit_prompt: bool = False
    native: str | None = None

    def describe(self) -> str:
        if self.conversational:
            form = "conversational (message lists, rendered with the chat template)"
        else:
            form = "standard (strings)"
        text = f"{self.format} rows, {form}"
        if self.implicit_prompt:
            text += ", implicit prompt (the shared beginning of chosen and rejected)"
        if self.native:
            return f"{NATIVE[self.native].title} (format {self.native}) mapped to {text}"
        return text


def detect_format(columns: Iterable[str]) -> str:
    """The TRL format whose columns these are."""
    columns = set(columns)
    for fmt, needed in COLUMNS:
        if needed <= columns:
            return fmt
    raise DataError(
        f"cannot tell the row format from the columns {sorted(columns)}: expected 'text', 'messages', "
        "'prompt', 'prompt' and 'completion', 'chosen' and 'rejected' (with or without 'prompt'), or a "
        f"classic dataset's layout ({', '.join(NATIVE)})"
    )


def detect_layout(columns: Iterable[str], first: dict | None, requested: str = "auto") -> Layout:
    """The layout of rows with these columns, the first row's value types deciding the form.

    `requested` is a source's `format`: a classic layout is taken as it is; `auto` looks for a classic
    layout, then a TRL format; a TRL format also accepts a classic layout that becomes it (an HH-RLHF
    file given as `preference` rows is read as HH-RLHF)."""
    columns = set(columns)
    native = requested if requested in NATIVE else None
    if native is None:
        found = detect_native(columns, first)
        native = found if requested == "auto" or (found and NATIVE[found].format == requested) else None
    if native:
        n = NATIVE[native]
        return Layout(n.format, n.conversational, n.implicit_prompt, native)
    fmt = detect_format(columns) if requested == "auto" else requested
    value = (first or {}).get(MAIN.get(fmt, ""))
    conversational = fmt == "messages" or is_conversation(value)
    return Layout(fmt, conversational, fmt == "preference" and "prompt" not in columns)


# ------------------------------------------------------------------------------ fields
def _value(row: dict, field: str):
    """A string or a validated message list."""
    value = row.get(field)
    if value is None:
        raise BadRow(field, "missing")
    if is_conversation(value):
        return check_messages(value, field)
    if not isinstance(value, str):
        raise BadRow(field, f"expected a string or a list of messages, got {type(value).__name__}")
    if not value.strip():
        raise BadRow(field, "empty")
    return value


def _same_form(first: tuple[str, object], *others: tuple[str, object]) -> None:
    want = is_conversation(first[1])
    for field, value in others:
        if is_conversation(value) != want:
            kind = "a list of messages" if want else "a string"
            raise BadRow(field, f"expected {kind} like '{first[0]}', got {type(value).__name__}")


def _completion(tokenizer, prompt: list, completion: list, field: str) -> tuple[str, str]:
    try:
        return render_completion(tokenizer, prompt, completion)
    except ValueError as err:
        raise BadRow(field, str(err)) from None


def _conversation(row: dict) -> list:
    """A `messages` row: at least two messages, the last the assistant's."""
    messages = check_messages(row.get("messages"), "messages", min_length=2)
    if messages[-1]["role"] != "assistant":
        raise BadRow(f"messages[{len(messages) - 1}].role", "the last message must be the assistant's")
    return messages


# ------------------------------------------------------------------------------ parsers
# A parser validates a row and returns its Example or PreferencePair as given: strings, or message
# lists that `rendered` turns into text once every row is known to be good.
def _from_text(row: dict) -> Example:
    text = _value(row, "text")
    if is_conversation(text):
        raise BadRow("text", "expected a string, got list (a conversation goes in a 'messages' column)")
    return Example("", text)


def _from_messages(row: dict) -> Example:
    """Prompt: the conversation before the last (assistant) turn; completion: that turn."""
    messages = _conversation(row)
    return Example(messages[:-1], messages[-1:])


def _from_prompt_completion(row: dict) -> Example:
    prompt, completion = _value(row, "prompt"), _value(row, "completion")
    _same_form(("prompt", prompt), ("completion", completion))
    return Example(prompt, completion)


def _from_prompt(row: dict) -> Example:
    return Example(_value(row, "prompt"), "")


def _preference_parts(row: dict) -> tuple:
    """(prompt, chosen, rejected) as given, the prompt cut from their shared beginning when implicit."""
    chosen, rejected = _value(row, "chosen"), _value(row, "rejected")
    _same_form(("chosen", chosen), ("rejected", rejected))
    if chosen == rejected:
        raise BadRow("rejected", "identical to 'chosen': the pair says nothing")
    if "prompt" not in row:
        return split_implicit(chosen, rejected)
    prompt = _value(row, "prompt")
    _same_form(("prompt", prompt), ("chosen", chosen))
    return prompt, chosen, rejected


def _number(row: dict, field: str) -> float | None:
    value = row.get(field)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _from_preference(row: dict) -> PreferencePair:
    prompt, chosen, rejected = _preference_parts(row)
    margin = row.get("margin")
    if margin is not None and _number(row, "margin") is None:
        raise BadRow("margin", f"expected a number, got {type(margin).__name__}")
    group = row.get("group")
    group = group if isinstance(group, int) and not isinstance(group, bool) else None
    gold = _number(row, "gold_chosen"), _number(row, "gold_rejected")
    return PreferencePair(prompt, chosen, rejected, float(margin or 0.0), *gold, group)


PARSERS: dict[str, Callable[[dict], Example | PreferencePair]] = {
    "text": _from_text,
    "prompt_completion": _from_prompt_completion,
    "messages": _from_messages,
    "prompt": _from_prompt,
    "preference": _from_preference,
}


def rendered(item: Example | PreferencePair, tokenizer) -> Example | PreferencePair:
    """An Example or PreferencePair as text: a conversational prompt rendered with the tokenizer's chat
    template and its generation prompt, each completion as the assistant turn(s) that follow it."""
    if not is_conversation(item.prompt):
        return item
    if isinstance(item, PreferencePair):
        prompt, chosen = _completion(tokenizer, item.prompt, item.chosen, "chosen")
        rejected = _completion(tokenizer, item.prompt, item.rejected, "rejected")[1]
        return dataclasses.replace(item, prompt=prompt, chosen=chosen, rejected=rejected)
    if not item.completion:  # prompt-only
        return Example(render_prompt(tokenizer, item.prompt), "")
    return Example(*_completion(tokenizer, item.prompt, item.completion, "completion"))


def _prompt_of(fmt: str) -> Callable[[dict], Prompt]:
    """What a sampling stage takes from a row of `fmt`: its prompt, a string or a message list."""
    if fmt == "text":
        raise DataError(
            "'text' rows have no prompt to sample from: give prompt, prompt-completion or preference rows"
        )
    if fmt == "messages":
        return lambda row: _conversation(row)[:-1]
    if fmt == "preference":
        return lambda row: _preference_parts(row)[0]
    return lambda row: _value(row, "prompt")


# The columns each format reads; others are kept by the dataset but not used, and named once in the log.
FIELDS = {
    "text": {"text"},
    "prompt_completion": {"prompt", "completion"},
    "messages": {"messages"},
    "prompt": {"prompt"},
    "preference": {"prompt", "chosen", "rejected", "margin", "gold_chosen", "gold_rejected", "group"}
    | {"labeler", "policy", "annotator"},  # provenance columns written by the collect stage
}


# ------------------------------------------------------------------------------ reading
def _open(src: SourceConfig, default, key: str):
    """(rows, name, layout) of a source, its layout logged."""
    ds, name = load_source(src, default, key)
    first = ds[0] if len(ds) else None
    layout = detect_layout(ds.column_names, first, src.format)
    how = "detected from the columns and values" if src.format == "auto" else f"format={src.format}"
    log.info("%s: %s (%s)", name, layout.describe(), how)
    ignored = sorted(set(ds.column_names) - FIELDS[layout.format])
    if ignored and not layout.native:  # a classic layout's other columns are its own metadata
        log.warning(
            "%s: columns %s are not part of the %s format and are ignored", name, ignored, layout.format
        )
    return ds, name, layout


def _mapped(parse: Callable, layout: Layout) -> Callable:
    if layout.native is None:
        return parse
    to_trl = NATIVE[layout.native].to_trl
    return lambda row: parse(to_trl(row))


def read_examples(
    src: SourceConfig, default, tokenizer, on_bad_row: str, key: str = "data.<source>"
) -> tuple[list, str]:
    """Load a source (`default` when its path is null) and parse its rows into Examples or
    PreferencePairs, conversations rendered with `tokenizer`'s chat template; also return its name.

    `tokenizer` may also be a function that loads it: it is called once every row is checked, and only
    if a row is conversational, so that a bad row is reported before any model is loaded."""
    ds, name, layout = _open(src, default, key)
    rows = _Rows(name, on_bad_row)
    items = rows.each(enumerate(ds), _mapped(PARSERS[layout.format], layout))
    if any(is_conversation(item.prompt) for _, item in items):
        loads = callable(tokenizer) and not hasattr(tokenizer, "apply_chat_template")
        tokenizer = tokenizer() if loads else tokenizer
        items = rows.each(items, lambda item: rendered(item, tokenizer))
    return rows.done(items), name


def read_prompts(
    src: SourceConfig, default, on_bad_row: str, key: str = "data.<source>"
) -> tuple[list[Prompt], str]:
    """The prompts of a source, each a string or a message list (rendered later by the policy's tokenizer).

    `format=prompt` (the prompt sources' default) takes the prompt of any row that has one: prompt-only,
    prompt-completion, preference (explicit or implicit), a conversation before its last turn, or a
    classic layout's; the log says which layout it found."""
    if src.format == "prompt":
        src = dataclasses.replace(src, format="auto")
    ds, name, layout = _open(src, default, key)
    rows = _Rows(name, on_bad_row)
    return rows.done(rows.each(enumerate(ds), _mapped(_prompt_of(layout.format), layout))), name


def parse_rows(rows: Iterable[dict], fmt: str, source: str, tokenizer, on_bad_row: str) -> list:
    """Parse, validate and render rows of a TRL format (or a classic layout)."""
    layout = detect_layout((), None, fmt) if fmt in NATIVE else Layout(fmt)
    reader = _Rows(source, on_bad_row)
    items = reader.each(enumerate(rows), _mapped(PARSERS[layout.format], layout))
    return reader.done(reader.each(items, lambda item: rendered(item, tokenizer)))


class _Rows:
    """Applies a step to (row index, value) pairs: a BadRow stops the read naming the source, row and
    field, or, with on_bad_row=skip, drops the row and counts it."""

    def __init__(self, source: str, on_bad_row: str):
        self.source, self.on_bad_row = source, on_bad_row
        self.total, self.skipped, self.first_error = None, 0, None

    def each(self, pairs: Iterable[tuple[int, object]], step: Callable) -> list[tuple[int, object]]:
        out = []
        for i, value in pairs:
            try:
                out.append((i, step(value)))
            except BadRow as err:
                message = f"{self.source}: row {i}, {err}"
                if self.on_bad_row == "error":
                    raise DataError(message + "  (data.on_bad_row=skip skips such rows)") from None
                self.skipped, self.first_error = self.skipped + 1, self.first_error or message
        if self.total is None:
            self.total = len(out) + self.skipped
        return out

    def done(self, pairs: list[tuple[int, object]]) -> list:
        report_skipped(self.source, self.skipped, self.total or 0, self.first_error)
        return [value for _, value in pairs]


def report_skipped(source: str, skipped: int, total: int, first_error: str | None) -> None:
    if skipped:
        log.warning("%s: skipped %d of %d rows (first: %s)", source, skipped, total, first_error)
    if total and skipped == total:
        raise DataError(f"{source}: every one of its {total} rows is bad (first: {first_error})")
