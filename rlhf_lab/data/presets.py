"""The field's classic preference datasets in their native layouts, mapped row by row to TRL's formats.

Each layout is a `data.<source>.format` (`conf/data/<preset>.yaml` sets it with the hub name), and is
also recognized by `format=auto` from its columns. Its rows become TRL rows, which `formats` then
validates and renders like any other file's, so a bad row names the native field (`choice`,
`summaries[1].text`, `labels`) or the TRL one after the mapping (`chosen[3].content`).

- `hh_rlhf` (Anthropic/hh-rlhf): chosen, rejected transcripts `\n\nHuman: … \n\nAssistant: …` →
  conversational preference rows with an implicit prompt (the turns both transcripts share);
- `summarize_comparisons` (openai/summarize_from_feedback, comparisons): info.{post, title, subreddit},
  summaries[i].text, choice → standard preference rows (the TL;DR prompt below);
- `tldr_sft` (vwxyzjn/summarize_from_feedback_tldr_3_filtered, OpenAI's tldr_3_filtered): subreddit,
  title, post, summary → standard prompt-completion rows;
- `ultrafeedback` (HuggingFaceH4/ultrafeedback_binarized): prompt, chosen/rejected message lists that
  begin with the user's turn, score_chosen/score_rejected → conversational preference rows with an
  implicit prompt and margin = score_chosen − score_rejected;
- `shp` (stanfordnlp/SHP): history, human_ref_A/B, labels (1: A preferred), score_ratio → standard
  preference rows `POST: {history}\n\nCOMMENT:` + comment, margin = ln(score_ratio).

The TL;DR prompt is the one of Stiennon et al. (2020) as Huang et al. (2024) write it:
`SUBREDDIT: r/{subreddit}\\n\\nTITLE: {title}\\n\\nPOST: {post}\\n\\nTL;DR:`, the summary its completion
after a space. A margin is used only with `reward_model.use_margin=true`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from rlhf_lab.data.sources import BadRow

HH_TURN = re.compile(r"\n\n(Human|Assistant): ?")
HH_ROLES = {"Human": "user", "Assistant": "assistant"}


@dataclass(frozen=True)
class Native:
    """A classic dataset's layout: how to recognize it and how one of its rows becomes a TRL row."""

    title: str
    hub: str
    format: str  # the TRL format its rows become
    columns: frozenset[str]  # what auto-detection needs (together with `looks`)
    to_trl: Callable[[dict], dict]
    looks: Callable[[dict], bool] = lambda row: True  # a check of the first row's values
    conversational: bool = False  # its TRL rows are message lists
    implicit_prompt: bool = False  # its TRL rows leave the prompt to chosen and rejected's shared beginning


def _string(row: dict, field: str, value=None) -> str:
    value = row.get(field) if value is None else value
    if value is None:
        raise BadRow(field, "missing")
    if not isinstance(value, str):
        raise BadRow(field, f"expected a string, got {type(value).__name__}")
    if not value.strip():
        raise BadRow(field, "empty")
    return value


def _number(row: dict, field: str) -> float:
    value = row.get(field)
    if value is None:
        raise BadRow(field, "missing")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise BadRow(field, f"expected a number, got {value!r}")
    return float(value)


def _binary(row: dict, field: str, meaning: str) -> int:
    value = row.get(field)
    if value is None:
        raise BadRow(field, "missing")
    if isinstance(value, bool) or value not in (0, 1):
        raise BadRow(field, f"expected 0 or 1 ({meaning}), got {value!r}")
    return int(value)


# ------------------------------------------------------------------------------ Anthropic HH-RLHF
def hh_messages(text, field: str) -> list[dict]:
    """A `\\n\\nHuman: … \\n\\nAssistant: …` transcript as messages (user, assistant, ...)."""
    text = _string({}, field, text)
    if not text.startswith("\n\nHuman:"):
        raise BadRow(field, "expected an HH-RLHF transcript beginning with '\\n\\nHuman:'")
    parts = HH_TURN.split(text)[1:]  # [speaker, content, speaker, content, ...]
    return [
        {"role": HH_ROLES[speaker], "content": content.strip()}
        for speaker, content in zip(parts[::2], parts[1::2], strict=True)
    ]


def _hh(row: dict) -> dict:
    return {
        "chosen": hh_messages(row.get("chosen"), "chosen"),
        "rejected": hh_messages(row.get("rejected"), "rejected"),
    }


def _is_hh(row: dict) -> bool:
    return isinstance(row.get("chosen"), str) and row["chosen"].startswith("\n\nHuman:")


# ------------------------------------------------------------------------------ OpenAI TL;DR
def tldr_prompt(subreddit: str, title: str, post: str) -> str:
    return f"SUBREDDIT: r/{subreddit}\n\nTITLE: {title}\n\nPOST: {post}\n\nTL;DR:"


def _tldr_sft(row: dict) -> dict:
    prompt = tldr_prompt(_string(row, "subreddit"), _string(row, "title"), _string(row, "post").strip())
    return {"prompt": prompt, "completion": " " + _string(row, "summary").strip()}


def _comparison_prompt(info) -> str:
    if not isinstance(info, dict):
        raise BadRow("info", f"expected an object with post, title and subreddit, got {type(info).__name__}")
    if (
        info.get("post") is None and info.get("article") is not None
    ):  # the CNN/DM rows of the validation split
        return f"ARTICLE: {_string(info, 'info.article', info['article']).strip()}\n\nTL;DR:"
    post = _string(info, "info.post", info.get("post"))
    title = _string(info, "info.title", info.get("title"))
    subreddit = _string(info, "info.subreddit", info.get("subreddit"))
    return tldr_prompt(subreddit, title, post.strip())


def _summarize_comparison(row: dict) -> dict:
    prompt = _comparison_prompt(row.get("info"))
    summaries = row.get("summaries")
    if not isinstance(summaries, list) or len(summaries) != 2:
        raise BadRow("summaries", "expected a list of the two compared summaries")
    texts = []
    for i, s in enumerate(summaries):
        if not isinstance(s, dict):
            raise BadRow(f"summaries[{i}]", "expected an object with a text")
        texts.append(" " + _string(s, f"summaries[{i}].text", s.get("text")).strip())
    choice = _binary(row, "choice", "the index of the preferred summary")
    return {"prompt": prompt, "chosen": texts[choice], "rejected": texts[1 - choice]}


# ------------------------------------------------------------------------------ UltraFeedback
def _ultrafeedback(row: dict) -> dict:
    chosen, rejected = _number(row, "score_chosen"), _number(row, "score_rejected")
    if chosen < rejected:
        raise BadRow("score_chosen", f"{chosen:g} is below score_rejected {rejected:g}")
    return {"chosen": row.get("chosen"), "rejected": row.get("rejected"), "margin": chosen - rejected}


def _is_ultrafeedback(row: dict) -> bool:
    return isinstance(row.get("chosen"), list)


# ------------------------------------------------------------------------------ Stanford SHP
def _shp(row: dict) -> dict:
    prompt = f"POST: {_string(row, 'history').strip()}\n\nCOMMENT:"
    a, b = (" " + _string(row, f"human_ref_{x}").strip() for x in "AB")
    a_wins = _binary(row, "labels", "1: A is preferred, 0: B is")
    ratio = _number(row, "score_ratio")
    if ratio < 1:
        raise BadRow(
            "score_ratio", f"expected >= 1 (the preferred comment's score over the other's), got {ratio:g}"
        )
    chosen, rejected = (a, b) if a_wins else (b, a)
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "margin": math.log(ratio)}


NATIVE: dict[str, Native] = {
    "hh_rlhf": Native(
        "Anthropic HH-RLHF transcripts",
        "Anthropic/hh-rlhf",
        "preference",
        frozenset({"chosen", "rejected"}),
        _hh,
        _is_hh,
        conversational=True,
        implicit_prompt=True,
    ),
    "summarize_comparisons": Native(
        "OpenAI summarize-from-feedback comparisons",
        "openai/summarize_from_feedback",
        "preference",
        frozenset({"info", "summaries", "choice"}),
        _summarize_comparison,
    ),
    "tldr_sft": Native(
        "OpenAI TL;DR SFT posts and summaries",
        "vwxyzjn/summarize_from_feedback_tldr_3_filtered",
        "prompt_completion",
        frozenset({"subreddit", "title", "post", "summary"}),
        _tldr_sft,
    ),
    "ultrafeedback": Native(
        "UltraFeedback binarized",
        "HuggingFaceH4/ultrafeedback_binarized",
        "preference",
        frozenset({"chosen", "rejected", "score_chosen", "score_rejected"}),
        _ultrafeedback,
        _is_ultrafeedback,
        conversational=True,
        implicit_prompt=True,
    ),
    "shp": Native(
        "Stanford SHP",
        "stanfordnlp/SHP",
        "preference",
        frozenset({"history", "human_ref_A", "human_ref_B", "labels", "score_ratio"}),
        _shp,
    ),
}


def detect_native(columns: set[str], first: dict | None) -> str | None:
    """The classic layout whose columns (and first row) these are, if any."""
    for name, native in NATIVE.items():
        if native.columns <= columns and (first is None or native.looks(first)):
            return name
    return None
