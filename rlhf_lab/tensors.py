"""The ground floor: padding, position ids, masks, repetition and the ignore index.

Every layer of rlhf_lab may import this module, and it imports nothing of rlhf_lab. Conventions:
prompts are LEFT-padded, responses RIGHT-padded, and position ids are always ``cumsum(mask) - 1``
(0 on left padding), so that a sequence gets the same numbers whatever batch it is in.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

import torch

IGNORE = -100  # label of tokens that carry no loss (prompt, padding): PyTorch's cross-entropy default
T = TypeVar("T")


def left_pad(sequences: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (B, L), mask (B, L)) left-padded, as torch.long."""
    width = max((len(s) for s in sequences), default=0)
    ids = [[pad_token_id] * (width - len(s)) + list(s) for s in sequences]
    mask = [[0] * (width - len(s)) + [1] * len(s) for s in sequences]
    shape = (len(sequences), width)
    return (
        torch.tensor(ids, dtype=torch.long).reshape(shape),  # (B, L)
        torch.tensor(mask, dtype=torch.long).reshape(shape),  # (B, L)
    )


def position_ids_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """(B, L) position ids cumsum(mask) - 1, clamped at 0 on left padding."""
    return (mask.long().cumsum(dim=-1) - 1).clamp_(min=0)  # (B, L)


def last_token_mask(mask: torch.Tensor) -> torch.Tensor:
    """Bool (B, T), true only at the last real token of each row (all false for an empty row)."""
    m = mask.long()  # (B, T)
    return (m.cumsum(-1) == m.sum(-1, keepdim=True)) & mask.bool()  # (B, T)


def repeat_each(items: Sequence[T], k: int) -> list[T]:
    """Each item k times in a row: item i at positions i*k .. i*k+k-1 (a group of k samples)."""
    return [item for item in items for _ in range(k)]


def shared_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens a and b share."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most `size` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
