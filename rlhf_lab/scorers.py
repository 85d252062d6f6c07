"""Scorers: `score(prompts, completions) -> (B,) float tensor`, the reward of RL and best-of-n.

All are batched, run without gradients, and return CPU float32 tensors. A prompt is a string or a
conversation (a message list) whose completion is the assistant's reply.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol

import torch

from rlhf_lab.artifacts import config_hash, is_complete, read_manifest
from rlhf_lab.config import Config, ConfigError, ModelConfig
from rlhf_lab.data.chat import Prompt, prompt_text, render_scored
from rlhf_lab.data.reward_inputs import reward_inputs
from rlhf_lab.models import folder_settings, load_reward_model, load_tokenizer, reward_logits
from rlhf_lab.world.careful import careful_score
from rlhf_lab.world.gold import gold_source, vader_score
from rlhf_lab.world.reader import reader_score


class Scorer(Protocol):
    def score(self, prompts: list[Prompt], completions: list[str]) -> torch.Tensor: ...


WORLD_GOLDS = {  # name → score(prompt texts, completions); the names are world.gold.GOLDS
    "careful": careful_score,
    "reader": reader_score,
    "vader": lambda prompts, completions: vader_score(completions),
}


class GoldScorer:
    """A gold of the tiny world by name (`gold`; `rlhf_lab.world.gold`), in [-1, 1]: `reader`, a careful
    reader's judgment, each flaw costing by degrees; `careful`, VADER sentiment of the completion when
    prompt + completion is well-formed and −1 as it is not; `vader`, VADER's sentiment of the completion
    alone. `reader` and `careful` read a conversation's completion as continuing its last message."""

    def __init__(self, kind: str):
        if kind not in WORLD_GOLDS:
            raise ConfigError(f"gold: {kind!r} is not one of {', '.join(WORLD_GOLDS)}")
        self.kind = kind

    def score(self, prompts: list[Prompt], completions: list[str]) -> torch.Tensor:
        values = WORLD_GOLDS[self.kind]([prompt_text(p) for p in prompts], completions)
        return torch.tensor(values, dtype=torch.float32)


class LengthScorer:
    """Number of words in the completion."""

    def score(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        return torch.tensor([len(c.split()) for c in completions], dtype=torch.float32)


class KeywordScorer:
    """+1 for each whole-word, case-insensitive occurrence of a keyword in the completion."""

    def __init__(self, keywords: list[str]):
        if not keywords:
            raise ConfigError("objective.keywords: the keyword scorer needs at least one keyword")
        self.pattern = re.compile(r"\b(" + "|".join(map(re.escape, keywords)) + r")\b", re.IGNORECASE)

    def score(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        return torch.tensor([len(self.pattern.findall(c)) for c in completions], dtype=torch.float32)


class RewardModelScorer:
    """A trained reward-model folder: re-tokenizes the text with its own tokenizer, reads the scalar
    head as its config's `reward_pool` says (the final token by default), and applies the
    normalization stored in its config (mean 0, std 1 on the samples of the policy it was normalized on).
    It loads with the run's model settings (dtype, attention, trust_remote_code) and scores in float32."""

    def __init__(
        self,
        path: str | Path,
        model: ModelConfig | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 256,
        max_length: int = 512,
    ):
        settings = folder_settings(model or ModelConfig())
        self.tokenizer = load_tokenizer(path, settings)
        self.model = load_reward_model(path, settings, self.tokenizer, new_head=False).to(device).eval()
        self.batch_size, self.max_length = batch_size, max_length
        self.mean = float(getattr(self.model.config, "reward_mean", 0.0))
        self.std = float(getattr(self.model.config, "reward_std", 1.0))
        self.pool = getattr(self.model.config, "reward_pool", "last")  # a hub reward model: HF's read-out

    @torch.no_grad()
    def raw_score(self, prompts: list[Prompt], completions: list[str]) -> torch.Tensor:
        """Unnormalized head outputs, (B,). A conversational prompt and its completion (the assistant's
        reply) are rendered with the reward model's own chat template (`data.chat.render_scored`)."""
        device = next(self.model.parameters()).device
        out = []
        for i in range(0, len(prompts), self.batch_size):
            batch = slice(i, i + self.batch_size)
            texts = [
                render_scored(self.tokenizer, p, c)  # a conversation, rendered with this model's template
                for p, c in zip(prompts[batch], completions[batch], strict=True)
            ]
            inputs = reward_inputs(
                self.tokenizer,
                [p for p, _ in texts],
                [c for _, c in texts],
                self.max_length,
                self.pool == "sum",
            )
            inputs = {k: t.to(device) for k, t in inputs.items()}  # (b, L)
            out.append(reward_logits(self.model, inputs, self.pool).float().cpu())  # (b,)
        return torch.cat(out) if out else torch.zeros(0)

    def score(self, prompts: list[Prompt], completions: list[str]) -> torch.Tensor:
        return (self.raw_score(prompts, completions) - self.mean) / self.std


# ------------------------------------------------------------------ the run's objective and gold
def needs_reward_stage(cfg: Config) -> bool:
    """Whether the objective is this config's own reward artifact (objective=rm, no path): a stage that
    scores with it (rl, bon, eval) then has the `reward` stage upstream."""
    return cfg.objective.kind == "rm" and cfg.objective.path is None


def reward_model_path(cfg: Config, inputs: dict[str, Path]) -> Path | None:
    """The reward-model folder the objective scores with (objective.path, else the reward artifact in
    `inputs`); None when the objective is not a reward model."""
    if cfg.objective.kind != "rm":
        return None
    return Path(cfg.objective.path) if cfg.objective.path else Path(inputs["reward"])


def objective_scorer(cfg: Config, inputs: dict[str, Path], device: str | torch.device = "cpu") -> Scorer:
    """The score RL and best-of-n maximize, and eval reports as the proxy: the `objective` group."""
    kind = cfg.objective.kind
    if kind == "gold":
        return gold_scorer(cfg, device)
    if kind == "length":
        return LengthScorer()
    if kind == "keyword":
        return KeywordScorer(list(cfg.objective.keywords))
    path = reward_model_path(cfg, inputs)
    return RewardModelScorer(path, cfg.model, device=device, batch_size=cfg.objective.batch_size)


def gold_scorer(cfg: Config, device: str | torch.device = "cpu") -> Scorer | None:
    """The gold named by `gold` (`rlhf_lab.world.gold`), or None when the config has none (gold=null):
    a gold of the world, or a reward model (a folder or a hub id) scored as the objective's reward model
    is, on `device`. Every stage that scores with gold builds it here."""
    if not cfg.gold:
        return None
    if gold_source(cfg.gold) == "world":
        return GoldScorer(cfg.gold)
    return RewardModelScorer(cfg.gold, cfg.model, device=device, batch_size=cfg.objective.batch_size)


def gold_key(cfg: Config) -> str | dict | None:
    """What of `gold` a stage's cache key holds: a world gold's name (as before reward models could be
    golds, so those keys are unchanged); a reward-model artifact's own key (its manifest's), wherever
    the folder lies; another folder's config.json and file sizes; a hub id as it is."""
    if not cfg.gold or gold_source(cfg.gold) != "folder":
        return cfg.gold
    folder = Path(cfg.gold).expanduser()
    if is_complete(folder):
        manifest = read_manifest(folder)
        return {"artifact": manifest["stage"], "key": manifest["key"]}
    files = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}
    config = (folder / "config.json").read_text() if (folder / "config.json").is_file() else None
    return {"folder": config_hash({"config": config, "files": files})}
