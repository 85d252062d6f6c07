"""Preference data for the reward model, grouped by prompt: K-wise ranking batches (InstructGPT).

Each batch element is one prompt with all its distinct completions and every labelled pair among
them, so each completion's reward is computed once however many pairs it is in (Ouyang 2022).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import partial

import lightning as L
import torch
from torch.utils.data import DataLoader

from rlhf_lab.data.formats import PreferencePair
from rlhf_lab.data.lm import Rows
from rlhf_lab.data.reward_inputs import reward_inputs
from rlhf_lab.data.sources import DataError


@dataclass
class RankGroup:
    """The completions of one prompt and its labelled pairs (i preferred to j)."""

    prompt: str
    completions: list[str] = field(default_factory=list)
    gold: list[float | None] = field(default_factory=list)
    pairs: list[tuple[int, int, float]] = field(default_factory=list)  # (winner, loser, margin)

    def index(self, text: str, gold: float | None) -> int:
        if text not in self.completions:
            self.completions.append(text)
            self.gold.append(gold)
        return self.completions.index(text)


def group_by_prompt(pairs: list[PreferencePair]) -> list[RankGroup]:
    """One group per sampling of a prompt (the `group` column), else per distinct prompt text."""
    groups: dict[tuple, RankGroup] = {}
    for p in pairs:
        group = groups.setdefault((p.prompt, p.group), RankGroup(p.prompt))
        i, j = group.index(p.chosen, p.gold_chosen), group.index(p.rejected, p.gold_rejected)
        group.pairs.append((i, j, p.margin))
    return list(groups.values())


def collate_groups(groups: list[RankGroup], tokenizer, max_length: int) -> dict[str, torch.Tensor]:
    """Flatten the completions of B prompts into one left-padded batch and lay the pairs out as (B, K, K).

    The `reward_inputs` of the N completions (N, L); slot (N,) = b*K + i places reward n at rewards[b, i];
    prefers, margins (B, K, K); gold (B, K) with NaN where unknown.
    """
    k = max(len(g.completions) for g in groups)
    texts = [(g.prompt, c) for g in groups for c in g.completions]
    inputs = reward_inputs(tokenizer, [p for p, _ in texts], [c for _, c in texts], max_length)  # (N, L)
    slot = torch.tensor([b * k + i for b, g in enumerate(groups) for i in range(len(g.completions))])
    prefers = torch.zeros(len(groups), k, k, dtype=torch.bool)  # (B, K, K)
    margins = torch.zeros(len(groups), k, k)  # (B, K, K)
    gold = torch.full((len(groups), k), float("nan"))  # (B, K)
    for b, g in enumerate(groups):
        for i, j, m in g.pairs:
            prefers[b, i, j], margins[b, i, j] = True, m
        gold[b, : len(g.gold)] = torch.tensor([float("nan") if x is None else x for x in g.gold])
    return inputs | {
        "slot": slot,
        "prefers": prefers,
        "margins": margins,
        "gold": gold,
    }


class PreferenceDataModule(L.LightningDataModule):
    """Prompt groups split into train and validation by prompt (no prompt in both)."""

    def __init__(
        self,
        pairs: list[PreferencePair],
        tokenizer,
        batch_size: int,
        max_length: int,
        val_size: int,
        seed: int,
    ):
        super().__init__()
        groups = group_by_prompt(pairs)
        random.Random(seed).shuffle(groups)
        n_val = min(val_size, len(groups) // 10 or 1)
        self.val_groups, self.train_groups = groups[:n_val], groups[n_val:]
        if not self.train_groups:
            raise DataError(f"{len(groups)} prompts of preference data leave nothing to train on")
        self.collate = partial(collate_groups, tokenizer=tokenizer, max_length=max_length)
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            Rows(self.train_groups),
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=len(self.train_groups) >= self.batch_size,
            collate_fn=self.collate,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(Rows(self.val_groups), batch_size=self.batch_size, collate_fn=self.collate)
