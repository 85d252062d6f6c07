"""The supervised losses: next-token likelihood (pretraining, SFT) and the Bradley–Terry preference loss
(the reward model)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rlhf_lab.tensors import IGNORE, masked_mean


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


def bradley_terry_loss(
    diff: torch.Tensor, margin: torch.Tensor | None = None, pairs: torch.Tensor | None = None
) -> torch.Tensor:
    """Bradley–Terry preference loss: mean over pairs of −log σ(r⁺ − r⁻ − margin) (Christiano 2017;
    Stiennon 2020), the one preference loss of rlhf_lab (reward training and validation).

    diff: r⁺ − r⁻ of each pair, any shape; margin: a required gap, same shape or scalar, optional;
    pairs: bool mask of the entries that are pairs (all if None). InstructGPT's K-wise ranking loss
    (Ouyang 2022) is this loss over the (B, K, K) differences r_i − r_j with pairs[b, i, j] when i is
    preferred to j: all pairs of a batch averaged together.
    """
    if margin is not None:
        diff = diff - margin
    nll = -F.logsigmoid(diff)  # same shape as diff
    return nll.mean() if pairs is None else masked_mean(nll, pairs)  # ()


def pairwise_differences(rewards: torch.Tensor) -> torch.Tensor:
    """(B, K, K) r_i − r_j of K rewards per prompt (B, K)."""
    return rewards.unsqueeze(-1) - rewards.unsqueeze(-2)  # (B, K, K)
