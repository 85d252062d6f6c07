"""Preference pairs as token ids, and their sequence log-probs through RL's padding-free passes.

A pair's two sequences are prompt + chosen and prompt + rejected. The prompt follows the long-prompt
rule of every stage (`data.prompts.encode_prompts`); a completion is tokenized alone, cut so that
prompt + completion + EOS fits in `data.max_length`, and ends in EOS, as in SFT (`data.lm`). The log-prob
of a completion is the sum over its tokens, EOS included, of log π(token | prompt, earlier tokens): one
forward pass over the chosen and the rejected sequences of a micro-batch together, laid end to end
without padding (`rollout.response_states`), as every pass of the RL stage is. The output layer then
runs at the completions' own positions only, not at the prompts' or the padding's (`completion_logps`;
a one-time probe per model class checks that this gives the model's own logits, else the full
`rollout.response_logprobs` is used).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from rlhf_lab.config import DataConfig
from rlhf_lab.data.formats import PreferencePair
from rlhf_lab.data.preferences import PreferenceDataModule
from rlhf_lab.data.prompts import encode_prompts
from rlhf_lab.models import eval_mode, model_device, unwrap
from rlhf_lab.rollout import Rollout, response_logprobs, response_states
from rlhf_lab.tensors import left_pad

_HEAD_WORKS: dict[tuple, bool] = {}  # (model class, attention implementation) -> probe result


@dataclass
class PairSet:
    """N tokenized preference pairs, their gold scores (NaN where unknown) and, once computed, the
    reference's sequence log-probs."""

    prompts: list[list[int]]  # N prompts' token ids
    chosen: list[list[int]]  # N completions' token ids, EOS last
    rejected: list[list[int]]
    gold_chosen: torch.Tensor  # (N,)
    gold_rejected: torch.Tensor  # (N,)
    ref_chosen: torch.Tensor | None = None  # (N,) log π_ref(chosen | prompt)
    ref_rejected: torch.Tensor | None = None  # (N,)

    def __len__(self) -> int:
        return len(self.prompts)

    def select(self, index: torch.Tensor | list[int]) -> PairSet:
        """The pairs `index`, in that order."""
        index = torch.as_tensor(index, dtype=torch.long)
        picked = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if torch.is_tensor(value):
                picked[f.name] = value[index]
            else:
                picked[f.name] = None if value is None else [value[i] for i in index.tolist()]
        return PairSet(**picked)

    def tokens(self) -> torch.Tensor:
        """(N,) tokens of a pair's two sequences together: what a forward pass over it costs."""
        return torch.tensor(
            [
                2 * len(p) + len(c) + len(r)
                for p, c, r in zip(self.prompts, self.chosen, self.rejected, strict=True)
            ]
        )

    def rollout(self, pad_token_id: int) -> Rollout:
        """The 2N sequences as a Rollout: rows 0..N−1 prompt + chosen, rows N..2N−1 prompt + rejected."""
        prompt_ids, prompt_mask = left_pad(self.prompts + self.prompts, pad_token_id)  # (2N, P)
        completions = self.chosen + self.rejected
        width = max(len(c) for c in completions)
        ids = torch.full((len(completions), width), pad_token_id, dtype=torch.long)  # (2N, T) right-padded
        mask = torch.zeros((len(completions), width), dtype=torch.long)  # (2N, T)
        for row, c in enumerate(completions):
            ids[row, : len(c)], mask[row, : len(c)] = torch.tensor(c), 1
        return Rollout(prompt_ids, prompt_mask, ids, mask, torch.zeros(ids.shape))


def tokenize_pairs(
    pairs: list[PreferencePair], tokenizer, data: DataConfig, source: str = "preference pairs"
) -> PairSet:
    """Token ids of each pair (the rules of the module docstring) and its gold scores."""
    prompts = encode_prompts(tokenizer, [p.prompt for p in pairs], data.max_prompt_length, source)

    def completions(texts: list[str]) -> list[list[int]]:
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        return [
            c[: max(0, data.max_length - len(p) - 1)] + [tokenizer.eos_token_id]
            for p, c in zip(prompts, ids, strict=True)
        ]

    def gold(values: list[float | None]) -> torch.Tensor:
        return torch.tensor([math.nan if v is None else float(v) for v in values], dtype=torch.float32)

    return PairSet(
        prompts,
        completions([p.chosen for p in pairs]),
        completions([p.rejected for p in pairs]),
        gold([p.gold_chosen for p in pairs]),
        gold([p.gold_rejected for p in pairs]),
    )


def split_pairs(
    pairs: list[PreferencePair], val_size: int, seed: int
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """(train, held out): whole prompts held out, as the reward stage splits them (PreferenceDataModule:
    min(val_size, a tenth of the prompts); the same prompts for the same seed)."""
    split = PreferenceDataModule(pairs, None, 1, 1, val_size, seed)

    def flat(groups) -> list[PreferencePair]:
        return [
            PreferencePair(g.prompt, g.completions[i], g.completions[j], m, g.gold[i], g.gold[j])
            for g in groups
            for i, j, m in g.pairs
        ]

    return flat(split.train_groups), flat(split.val_groups)


class PairLogps(NamedTuple):
    """Sequence log-probs of B pairs' completions and their lengths in tokens (EOS included)."""

    chosen: torch.Tensor  # (B,)
    rejected: torch.Tensor  # (B,)
    chosen_lengths: torch.Tensor  # (B,)
    rejected_lengths: torch.Tensor  # (B,)


def completion_logps(model: nn.Module, rollout: Rollout) -> torch.Tensor:
    """(N,) Σ_t log π(y_t | prompt, y_<t) over each row's completion tokens (EOS included), with
    gradients if enabled: one padding-free pass of the decoder, then the output layer at the completion
    tokens' positions only. Models whose logits are more than their output layer of the last hidden
    state (a soft cap, a scale) fail the probe and take `rollout.response_logprobs`."""
    rollout = rollout.to(model_device(model))
    if not _head_works(model):
        return response_logprobs(model, rollout).sum(-1)  # (N,)
    decoder, head = unwrap(model).base_model, unwrap(model).get_output_embeddings()

    def run(input_ids, position_ids, attention_mask, keep):
        out = decoder(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        )
        return (out.last_hidden_state,)  # (R, L, d)

    (hidden,) = response_states(run, rollout, model)  # (N, T, d) at the positions predicting each token
    mask = rollout.response_mask.bool()  # (N, T)
    logits = head(hidden[mask]).float()  # (n, V) n = the completion tokens of all rows
    token_logps = -F.cross_entropy(logits, rollout.response_ids[mask], reduction="none")  # (n,)
    rows = torch.arange(len(rollout), device=mask.device).unsqueeze(1).expand_as(mask)[mask]  # (n,)
    return token_logps.new_zeros(len(rollout)).index_add(0, rows, token_logps)  # (N,)


def _head_works(model: nn.Module) -> bool:
    """Whether the output layer applied to the decoder's last hidden state gives the model's logits (so
    the head may run at chosen positions only), checked once per model class."""
    base = unwrap(model)
    key = (type(base), getattr(getattr(base, "config", None), "_attn_implementation", None))
    if key not in _HEAD_WORKS:
        ids = torch.tensor([[5, 3, 4, 2, 1]], device=model_device(model))  # (1, 5)
        try:
            with eval_mode(model), torch.no_grad():
                full = model(input_ids=ids, use_cache=False).logits.float()  # (1, 5, V)
                hidden = base.base_model(input_ids=ids, use_cache=False).last_hidden_state  # (1, 5, d)
                mine = base.get_output_embeddings()(hidden).float()  # (1, 5, V)
            _HEAD_WORKS[key] = torch.allclose(full, mine, atol=1e-4, rtol=1e-4)
        except (AttributeError, TypeError):  # no base_model / output embeddings of that shape
            _HEAD_WORKS[key] = False
    return _HEAD_WORKS[key]


def pair_logps(model: nn.Module, pairs: PairSet, pad_token_id: int, reference=None) -> PairLogps:
    """log π(chosen | prompt) and log π(rejected | prompt), summed over completion tokens, in one
    padding-free pass over both (with gradients if enabled). `reference` (`policy.Reference`):
    the same under the reference instead, without gradients — its frozen copy, or `model` with its LoRA
    adapter disabled."""
    rollout = pairs.rollout(pad_token_id)
    if reference is None:
        sums = completion_logps(model, rollout)  # (2B,)
    elif reference.copy is None:
        with torch.no_grad(), model.disable_adapter():
            sums = completion_logps(model, rollout)  # (2B,)
    else:
        with torch.no_grad():
            sums = completion_logps(reference.copy.to(model_device(model)), rollout)  # (2B,)
    lengths = rollout.lengths().to(sums.device)  # (2B,)
    b = len(pairs)
    return PairLogps(sums[:b], sums[b:], lengths[:b], lengths[b:])


def chunk_by_tokens(tokens: torch.Tensor, budget: int) -> list[torch.Tensor]:
    """Consecutive index ranges whose tokens (N,) add up to at most `budget` each (a single larger item
    alone); budget 0 = one chunk. For no-grad passes over a whole dataset."""
    if budget == 0 or len(tokens) == 0:
        return [torch.arange(len(tokens))]
    chunks, start, total = [], 0, 0
    for i, n in enumerate(tokens.tolist()):
        if total + n > budget and i > start:
            chunks.append(torch.arange(start, i))
            start, total = i, 0
        total += n
    chunks.append(torch.arange(start, len(tokens)))
    return chunks


@torch.no_grad()
def all_logps(model: nn.Module, pairs: PairSet, pad_token_id: int, budget: int, reference=None) -> PairLogps:
    """`pair_logps` of every pair of a set, in chunks of about `budget` tokens, without gradients."""
    parts = [
        pair_logps(model, pairs.select(index), pad_token_id, reference)
        for index in chunk_by_tokens(pairs.tokens(), budget)
    ]
    return PairLogps(*(torch.cat([p[i] for p in parts]).cpu() for i in range(4)))
