"""The maths of rlhf_lab as pure tensor functions; stages call these, nothing is copied between stages."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100  # label of tokens that carry no loss (prompt, padding)


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token negative log-likelihood over labelled tokens, and their count.

    logits (B, L, V) predict position t+1 from position t; labels (B, L) hold IGNORE where a token
    is not trained on (prompt tokens in SFT, padding). Returns (sum, count) so that callers can
    average over a batch, or accumulate across validation batches for an exact perplexity.
    """
    shift_logits = logits[:, :-1].flatten(0, 1).float()  # (B*(L-1), V)
    shift_labels = labels[:, 1:].flatten()  # (B*(L-1),)
    nll = F.cross_entropy(shift_logits, shift_labels, ignore_index=IGNORE, reduction="sum")
    return nll, (shift_labels != IGNORE).sum()


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token NLL over labelled tokens: the pretraining loss, and SFT's response-only loss."""
    total, count = token_nll(logits, labels)
    return total / count.clamp(min=1)
