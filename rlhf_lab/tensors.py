"""The ground floor: padding, position ids, masks, masked reductions, repetition and the ignore index.

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


# ----------------------------------------------------------------------------------------------
# Masked reductions. Masks are float or bool (B, T) with 1 on real response tokens; masked entries
# are excluded with torch.where, so inf/nan stored there cannot leak into values or gradients.
# ----------------------------------------------------------------------------------------------


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of x over entries where mask is nonzero, over `dim` (all dims if None)."""
    kept = torch.where(mask.bool(), x, torch.zeros_like(x))  # (B, T)
    return kept.sum() if dim is None else kept.sum(dim)  # () or reduced


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of x over masked entries; an empty selection gives 0 (the count is clamped to 1)."""
    count = masked_sum(torch.ones_like(x), mask, dim)  # () or reduced
    return masked_sum(x, mask, dim) / count.clamp(min=1)  # () or reduced


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of x over all masked entries; unbiased applies Bessel's n/(n−1) correction."""
    centered = x - masked_mean(x, mask)  # (B, T)
    var = masked_mean(centered.square(), mask)  # ()
    if unbiased:
        n = masked_sum(torch.ones_like(x), mask)  # ()
        var = var * n / (n - 1).clamp(min=1)  # ()
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Whiten x with the mean and (unbiased) variance of its masked entries (Huang et al. 2024).

    shift_mean=True: (x − μ)/σ, i.e. mean 0 and variance 1 (used for advantages).
    shift_mean=False: (x − μ)/σ + μ, i.e. the spread is scaled to variance 1 but the mean μ is kept
    (their reward whitening). Masked positions are 0 in the output.
    """
    mean = masked_mean(x, mask)  # ()
    whitened = (x - mean) * torch.rsqrt(masked_var(x, mask) + 1e-8)  # (B, T)
    if not shift_mean:
        whitened = whitened + mean  # (B, T)
    return torch.where(mask.bool(), whitened, torch.zeros_like(whitened))  # (B, T)
