"""Scorers: `score(prompts, completions) -> (B,) float tensor`, the reward of RL and best-of-n.

All are batched, run without gradients, and return CPU float32 tensors.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol

import torch

from rlhf_lab.config import ModelConfig, ScorerConfig
from rlhf_lab.world.corpus import gold_score


class Scorer(Protocol):
    def score(self, prompts: list[str], completions: list[str]) -> torch.Tensor: ...


class GoldScorer:
    """The tiny world's gold reward: VADER's compound sentiment of the completion, in [-1, 1]."""

    def score(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        return torch.tensor(gold_score(completions), dtype=torch.float32)


class LengthScorer:
    """Number of words in the completion."""

    def score(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        return torch.tensor([len(c.split()) for c in completions], dtype=torch.float32)


class KeywordScorer:
    """+1 for each whole-word, case-insensitive occurrence of a keyword in the completion."""

    def __init__(self, keywords: list[str]):
        if not keywords:
            raise ValueError("reward.keywords: the keyword scorer needs at least one keyword")
        self.pattern = re.compile(r"\b(" + "|".join(map(re.escape, keywords)) + r")\b", re.IGNORECASE)

    def score(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        return torch.tensor([len(self.pattern.findall(c)) for c in completions], dtype=torch.float32)


class RewardModelScorer:
    """A trained reward-model folder: re-tokenizes the text with its own tokenizer, reads the scalar
    head as its config's `reward_pool` says (the final token by default), and applies the
    normalization stored in its config (mean 0, std 1 on the samples of the policy it was normalized on)."""

    def __init__(
        self,
        path: str | Path,
        device: str | torch.device = "cpu",
        batch_size: int = 256,
        max_length: int = 512,
    ):
        from rlhf_lab.models import load_reward_model, load_tokenizer

        self.tokenizer = load_tokenizer(path, ModelConfig())
        self.model = load_reward_model(path, ModelConfig(), self.tokenizer, new_head=False).to(device).eval()
        self.batch_size, self.max_length = batch_size, max_length
        self.mean = float(getattr(self.model.config, "reward_mean", 0.0))
        self.std = float(getattr(self.model.config, "reward_std", 1.0))
        self.pool = getattr(self.model.config, "reward_pool", "last")  # a hub reward model: HF's read-out

    @torch.no_grad()
    def raw_score(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        """Unnormalized head outputs, (B,)."""
        from rlhf_lab.models import reward_inputs, reward_logits

        device = next(self.model.parameters()).device
        out = []
        for i in range(0, len(prompts), self.batch_size):
            batch = slice(i, i + self.batch_size)
            inputs = reward_inputs(
                self.tokenizer, prompts[batch], completions[batch], self.max_length, self.pool == "sum"
            )
            inputs = {k: t.to(device) for k, t in inputs.items()}  # (b, L)
            out.append(reward_logits(self.model, inputs, self.pool).float().cpu())  # (b,)
        return torch.cat(out) if out else torch.zeros(0)

    def score(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        return (self.raw_score(prompts, completions) - self.mean) / self.std


def make_scorer(cfg: ScorerConfig, rm_path: str | Path | None = None, device: str = "cpu") -> Scorer:
    """The scorer of the `reward` group; `rm_path` is the reward artifact when `reward.path` is null."""
    if cfg.kind == "gold":
        return GoldScorer()
    if cfg.kind == "length":
        return LengthScorer()
    if cfg.kind == "keyword":
        return KeywordScorer(list(cfg.keywords))
    path = cfg.path or rm_path
    if path is None:
        raise ValueError("reward.path: reward=rm needs a reward-model folder")
    return RewardModelScorer(path, device=device, batch_size=cfg.batch_size)
