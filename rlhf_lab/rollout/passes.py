"""Fresh forward passes over rollouts: log-probs, entropy, logits and hidden states of the response
tokens, padding-free where the model allows (sequences packed end to end)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from rlhf_lab.losses import entropy_from_logprobs
from rlhf_lab.models import accepts, eval_mode, model_device, unwrap
from rlhf_lab.rollout.batch import ResponseStats, Rollout
from rlhf_lab.rollout.sampling import truncate
from rlhf_lab.tensors import position_ids_from_mask

log = logging.getLogger("rlhf_lab.rollout")


def response_logprobs(
    model: nn.Module,
    rollout: Rollout,
    temperature: float = 1.0,
    *,
    top_k: int = 0,
    top_p: float = 1.0,
    return_entropy: bool = False,
    entropy_grad: bool = False,
    return_logits: bool = False,
    return_hidden: bool = False,
) -> torch.Tensor | ResponseStats:
    """(B, T) log-probs of the response tokens under log_softmax(logits / temperature), or, with `top_k`
    / `top_p`, under that distribution truncated as the sampler truncates it (`sampling.truncate`, the
    response tokens always kept) and renormalized: the distribution that sampled.

    A fresh forward pass over prompt + response with the same position ids as generation, padding-free
    when the model supports it (:func:`response_states`); 0 where response_mask is 0. Runs with
    gradients if enabled (the RL step calls it that way) and leaves the model's train/eval mode alone.
    With `return_entropy` / `return_logits`, returns a :class:`ResponseStats` (logprobs, entropy (B, T),
    logits / temperature (B, T, V), truncated with top_k / top_p); the entropy carries a gradient only
    with `entropy_grad` (a loss term, not just a metric). With `return_hidden`, also the last hidden
    states (B, T, d) at the same positions as the logits.
    """
    device = model_device(model)
    rollout = rollout.to(device)

    def run(input_ids, position_ids, attention_mask, keep):
        extra = {"logits_to_keep": keep} if keep and accepts(model, "logits_to_keep") else {}
        out = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
            output_hidden_states=return_hidden,
            **extra,
        )
        return (out.logits, out.hidden_states[-1]) if return_hidden else (out.logits,)

    logits, *hidden = response_states(run, rollout, model)  # (B, T, V), [(B, T, d)]
    logits = logits.float()  # (B, T, V)
    if temperature != 1.0:
        logits = logits / temperature  # (B, T, V)
    logits = truncate(logits, top_k, top_p, keep=rollout.response_ids)  # (B, T, V)
    logp_all = logits.log_softmax(dim=-1)  # (B, T, V)
    resp_mask = rollout.response_mask.bool()  # (B, T)
    logp = logp_all.gather(-1, rollout.response_ids.unsqueeze(-1)).squeeze(-1)  # (B, T)
    logp = logp.masked_fill(~resp_mask, 0.0)  # (B, T)
    if not (return_entropy or return_logits or return_hidden):
        return logp
    entropy = None
    if return_entropy:
        with torch.set_grad_enabled(torch.is_grad_enabled() and entropy_grad):
            entropy = entropy_from_logprobs(logp_all)  # (B, T)
            entropy = entropy.masked_fill(~resp_mask, 0.0)  # (B, T)
    return ResponseStats(logp, entropy, logits if return_logits else None, hidden[0] if hidden else None)


PACK_WIDTH = 2  # packed rows hold up to this many times the longest sequence: few rows, short attention
_PACKING_WORKS: dict[tuple, bool] = {}  # (model class, attention implementation) -> probe result


class Packed(NamedTuple):
    """A rollout's sequences laid end to end in a few rows, without padding."""

    input_ids: torch.Tensor  # (R, W) filler (id 0, its own one-token sequence) after the last sequence
    position_ids: torch.Tensor  # (R, W) 0, 1, ... within each sequence: the positions of the padded layout
    predicts: torch.Tensor  # (B, T) index into the flattened (R*W) positions of the state that predicts
    # each response token (an arbitrary valid index where the response mask is 0)


def pack(rollout: Rollout) -> Packed:
    """Pack prompt + response of every row first-fit decreasing into rows of PACK_WIDTH x the longest.

    With no attention mask, HF models read sequence boundaries off position ids that restart at 0
    (`transformers.masking_utils.find_packed_sequence_indices`) and build a block-diagonal causal mask,
    so each sequence attends to itself only: the same computation as the padded layout on fewer tokens.
    """
    mask = rollout.attention_mask.bool()  # (B, L) real tokens are contiguous: left-padded prompt ++ response
    lengths = mask.sum(dim=1).tolist()
    width = PACK_WIDTH * max(lengths)
    row, start = _first_fit_decreasing(lengths, width)
    device = mask.device
    row_t = torch.tensor(row, device=device)  # (B,)
    start_t = torch.tensor(start, device=device)  # (B,)
    positions = position_ids_from_mask(mask)  # (B, L)
    slot = (row_t * width + start_t).unsqueeze(1) + positions  # (B, L) flat packed index of each token
    size = (max(row) + 1) * width
    input_ids = torch.zeros(size, dtype=torch.long, device=device)  # (R*W,)
    input_ids[slot[mask]] = rollout.sequences[mask]
    position_ids = torch.zeros(size, dtype=torch.long, device=device)  # (R*W,)
    position_ids[slot[mask]] = positions[mask]
    num_resp = rollout.response_ids.shape[1]
    first = row_t * width + start_t + rollout.prompt_lengths() - 1  # (B,) predicts response token 0
    predicts = (first.unsqueeze(1) + torch.arange(num_resp, device=device)).clamp_(max=size - 1)  # (B, T)
    return Packed(input_ids.view(-1, width), position_ids.view(-1, width), predicts)


def _first_fit_decreasing(lengths: list[int], width: int) -> tuple[list[int], list[int]]:
    """(row, start) of each item when items go, longest first, into the first row with room."""
    row, start, free = [0] * len(lengths), [0] * len(lengths), []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        r = next((r for r, room in enumerate(free) if room >= lengths[i]), len(free))
        if r == len(free):
            free.append(width)
        row[i], start[i] = r, width - free[r]
        free[r] -= lengths[i]
    return row, start


def response_states(run: Callable, rollout: Rollout, model: nn.Module) -> tuple[torch.Tensor, ...]:
    """Per-position outputs of `model` at the positions that predict each response token, (B, T, X) each.

    `run(input_ids, position_ids, attention_mask, keep)` calls `model` and returns a tuple of (R, L, X)
    outputs (logits, hidden states, ...); `keep` = how many final positions the first output needs
    (0 = all). Packed (:func:`pack`) when the model's class passes a one-time probe, else one
    left-padded batch.
    """
    num_resp = rollout.response_ids.shape[1]
    if num_resp and _packing_works(run, model):
        packed = pack(rollout)
        outputs = run(packed.input_ids, packed.position_ids, None, 0)
        return tuple(out.flatten(0, 1)[packed.predicts] for out in outputs)  # (B, T, X) each
    mask = rollout.attention_mask  # (B, P+T)
    outputs = run(rollout.sequences, position_ids_from_mask(mask), mask, num_resp + 1)
    # Positions P-1 .. P+T-2 predict the T response tokens.
    return tuple(out[:, out.shape[1] - num_resp - 1 : -1] for out in outputs)  # (B, T, X) each


def _packing_works(run: Callable, model: nn.Module) -> bool:
    """Whether packed rows give the padded numbers for this model's class and attention implementation:
    two sequences packed in one row against the second alone, checked once per class (a model that
    ignores packed position ids would let the second sequence attend to the first)."""
    base = unwrap(model)
    key = (type(base), getattr(getattr(base, "config", None), "_attn_implementation", None))
    if key not in _PACKING_WORKS:
        device = model_device(model)
        ids, positions = [[5, 3, 4, 2, 1, 4, 3]], [[0, 1, 2, 3, 0, 1, 2]]  # (1, 7) two sequences
        with eval_mode(model), torch.no_grad():
            packed = run(torch.tensor(ids, device=device), torch.tensor(positions, device=device), None, 0)[0]
            alone = run(torch.tensor([ids[0][4:]], device=device), None, None, 0)[0]
        _PACKING_WORKS[key] = torch.allclose(packed[0, 4:].float(), alone[0].float(), atol=1e-4, rtol=1e-3)
        if not _PACKING_WORKS[key]:
            log.info("%s (%s attention) does not separate packed sequences: padded batches", *key)
    return _PACKING_WORKS[key]
