"""A batch of sampled responses (`Rollout`) and what a fresh pass over it returns (`ResponseStats`)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import torch

from rlhf_lab.tensors import position_ids_from_mask


@dataclass
class Rollout:
    """A batch of prompts and their generated responses (all tensors on one device)."""

    prompt_ids: torch.Tensor  # (B, P) left-padded with pad_token_id
    prompt_mask: torch.Tensor  # (B, P) 1 on real prompt tokens
    response_ids: torch.Tensor  # (B, T) right-padded with pad_token_id after EOS / at the end
    response_mask: torch.Tensor  # (B, T) 1 on generated tokens up to and including EOS
    logprobs: torch.Tensor  # (B, T) float32 sampling log-prob of each response token, 0 if masked
    eos_token_id: int | None = None  # lets `ends_with_eos` tell EOS from truncation

    @property
    def ends_with_eos(self) -> torch.Tensor:
        """(B,) bool: the response ended with EOS (False: cut at max_new_tokens)."""
        lengths = self.lengths()  # (B,)
        width = self.response_ids.shape[1]
        if self.eos_token_id is None or width == 0:  # unknown EOS: shorter than T means stopped
            return lengths < width  # (B,)
        last = (lengths - 1).clamp(min=0).unsqueeze(1)  # (B, 1)
        last_tok = self.response_ids.gather(1, last).squeeze(1)  # (B,)
        return (lengths > 0) & (last_tok == self.eos_token_id)  # (B,)

    @property
    def sequences(self) -> torch.Tensor:
        """(B, P+T) prompt_ids ++ response_ids."""
        return torch.cat([self.prompt_ids, self.response_ids], dim=1)  # (B, P+T)

    @property
    def attention_mask(self) -> torch.Tensor:
        """(B, P+T) prompt_mask ++ response_mask."""
        return torch.cat([self.prompt_mask, self.response_mask], dim=1)  # (B, P+T)

    @property
    def position_ids(self) -> torch.Tensor:
        """(B, P+T) the position ids generation used: cumsum(mask) - 1, 0 on padding."""
        return position_ids_from_mask(self.attention_mask)  # (B, P+T)

    def lengths(self) -> torch.Tensor:
        """(B,) number of response tokens (EOS included)."""
        return self.response_mask.sum(dim=1)  # (B,)

    def prompt_lengths(self) -> torch.Tensor:
        """(B,) number of real prompt tokens."""
        return self.prompt_mask.sum(dim=1)  # (B,)

    def __len__(self) -> int:
        return self.prompt_ids.shape[0]

    def to(self, device: torch.device | str) -> Rollout:
        """A copy with every tensor on `device`."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return Rollout(**{k: v.to(device) if torch.is_tensor(v) else v for k, v in values.items()})

    def select(self, index: torch.Tensor) -> Rollout:
        """The rows `index` (a minibatch), every tensor indexed along the batch dimension."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return Rollout(**{k: v[index] if torch.is_tensor(v) else v for k, v in values.items()})

    def truncate_after(self, token_id: int, pad_token_id: int) -> Rollout:
        """Responses cut after the first `token_id` (a stop token, Huang et al. 2024): later tokens
        become padding and leave the mask."""
        hit = (self.response_ids == token_id) & self.response_mask.bool()  # (B, T)
        after = (hit.long().cumsum(dim=1) - hit.long()) > 0  # (B, T) strictly after the first stop
        keep = self.response_mask.bool() & ~after  # (B, T)
        return Rollout(
            self.prompt_ids,
            self.prompt_mask,
            self.response_ids.masked_fill(~keep, pad_token_id),
            keep.to(self.response_mask.dtype),
            self.logprobs.masked_fill(~keep, 0.0),
            self.eos_token_id,
        )


class ResponseStats(NamedTuple):
    """What :func:`response_logprobs` returns when asked for more than log-probs."""

    logprobs: torch.Tensor  # (B, T) float32
    entropy: torch.Tensor | None  # (B, T) float32, or None if not asked for
    logits: torch.Tensor | None  # (B, T, V) float32 logits / temperature, or None if not asked for
    hidden: torch.Tensor | None = None  # (B, T, d) last hidden state at the positions predicting
    # each response token (the states a value head reads), or None if not asked for


def decode_responses(tokenizer: Any, rollout: Rollout) -> list[str]:
    """Each row's response as text: its real tokens (up to and including EOS), special tokens skipped."""
    rows, lengths = rollout.response_ids.tolist(), rollout.lengths().tolist()
    return [tokenizer.decode(row[:n], skip_special_tokens=True) for row, n in zip(rows, lengths, strict=True)]
