"""The tasks cut from the corpus: prompts (review openings) and SFT pairs (opening, continuation)."""

from __future__ import annotations

import random

from rlhf_lab.world.corpus import WORD


def split_prompt(
    document: str, rng: random.Random, min_words: int = 2, max_words: int = 6
) -> tuple[str, str]:
    """Split a document into a prompt (its first w words, w drawn from [min_words, max_words],
    never the whole document) and the continuation (the rest, beginning with a space so
    prompt + continuation == document)."""
    word_ends = [m.end() for m in WORD.finditer(document)]
    if len(word_ends) < 2:
        raise ValueError(f"cannot split a document of fewer than 2 words: {document!r}")
    n_words = min(rng.randint(min_words, max_words), len(word_ends) - 1)
    cut = word_ends[n_words - 1]
    return document[:cut], document[cut:]


def make_prompts(documents: list[str], seed: int, min_words: int = 2, max_words: int = 6) -> list[str]:
    """Review openings (as in the DPO controlled-sentiment task: short prefixes of reviews)."""
    rng = random.Random(seed)
    return [split_prompt(d, rng, min_words, max_words)[0] for d in documents]


def make_sft_pairs(documents: list[str], seed: int, min_words: int = 2, max_words: int = 6) -> list[dict]:
    """[{"prompt": ..., "completion": ...}] with prompt + completion == document."""
    rng = random.Random(seed)
    pairs = (split_prompt(d, rng, min_words, max_words) for d in documents)
    return [{"prompt": prompt, "completion": completion} for prompt, completion in pairs]


def as_conversation(row: dict) -> dict:
    """A prompt or prompt/completion row in TRL's conversational form: the prompt as the user's message,
    the completion as the assistant's (its text unchanged, so prompt + completion is still the document)."""
    out = {"prompt": [{"role": "user", "content": row["prompt"]}]}
    if "completion" in row:
        out["completion"] = [{"role": "assistant", "content": row["completion"]}]
    return out
