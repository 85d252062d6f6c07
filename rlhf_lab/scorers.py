"""Scorers: `score(prompts, completions) -> (B,) tensor`, the reward of RL and the judge of evaluation."""

from __future__ import annotations

from typing import Protocol

import torch

from rlhf_lab.world.corpus import gold_score


class Scorer(Protocol):
    def score(self, prompts: list[str], completions: list[str]) -> torch.Tensor: ...


class GoldScorer:
    """The tiny world's gold reward: VADER's compound sentiment of the completion, in [-1, 1]."""

    def score(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        return torch.tensor(gold_score(completions), dtype=torch.float32)
