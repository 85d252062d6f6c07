"""Scorers: `score(prompts, completions) -> (B,) float tensor`, the reward of RL and best-of-n.

All are batched, run without gradients, and return CPU float32 tensors. A prompt is a string or a
conversation (a message list) whose completion is the assistant's reply.
"""

from __future__ import annotations

import dataclasses
import logging
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

log = logging.getLogger(__name__)


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
        self.path = path
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


# ------------------------------------------------------------------ ensembles (Coste et al. 2023)
COMBINE = ("mean", "min", "uwo")  # objective.combine


def combine(scores: torch.Tensor, how: str, uwo_lambda: float = 0.0) -> torch.Tensor:
    """The members' scores (M, B) as one objective (B,) (Coste et al. 2023, "Reward model ensembles help
    mitigate overoptimization", sec. 3): `mean`; `min`, the worst case (WCO); `uwo`, the mean less
    uwo_lambda times the members' variance, (1/M)·Σ_i (r_i − r̄)² (uncertainty-weighted, UWO)."""
    if how == "mean":
        return scores.mean(0)
    if how == "min":
        return scores.min(0).values
    if how == "uwo":
        return scores.mean(0) - uwo_lambda * scores.var(0, correction=0)
    raise ConfigError(f"objective.combine: {how!r} is not one of {', '.join(COMBINE)}")


class EnsembleScorer:
    """Several reward models as one objective (Coste et al. 2023): each member scores with the
    normalization its reward stage stored (mean 0, std 1 on the policy's samples, as Coste normalizes
    every member), and `combine` makes one score of theirs."""

    def __init__(self, members: list[RewardModelScorer], how: str, uwo_lambda: float = 0.0):
        self.members, self.how, self.uwo_lambda = members, how, uwo_lambda
        for m in members:
            if not hasattr(m.model.config, "reward_std"):
                log.warning("ensemble member %s stores no normalization: its raw scores are combined", m.path)

    def member_scores(self, prompts: list[Prompt], completions: list[str]) -> torch.Tensor:
        return torch.stack([m.score(prompts, completions) for m in self.members])  # (M, B)

    def score(self, prompts: list[Prompt], completions: list[str]) -> torch.Tensor:
        return combine(self.member_scores(prompts, completions), self.how, self.uwo_lambda)  # (B,)


def scores_and_members(
    scorer: Scorer, prompts: list[Prompt], completions: list[str]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A scorer's scores (B,), and an ensemble's member scores (M, B) (None for any other scorer)."""
    if not isinstance(scorer, EnsembleScorer):
        return scorer.score(prompts, completions), None
    members = scorer.member_scores(prompts, completions)  # (M, B)
    return combine(members, scorer.how, scorer.uwo_lambda), members


def ensemble_metrics(members: torch.Tensor) -> dict[str, float]:
    """Of member scores (M, B): `ensemble_std`, the members' standard deviation (1/M) averaged over the
    texts (their disagreement), and `ensemble_member<i>`, each member's mean score."""
    metrics = {"ensemble_std": members.std(0, correction=0).mean().item()}
    return metrics | {f"ensemble_member{i}": m.mean().item() for i, m in enumerate(members)}


# ------------------------------------------------------------------ the run's objective and gold
def needs_reward_stage(cfg: Config) -> bool:
    """Whether the objective is this config's own reward artifact (objective=rm, no path): a stage that
    scores with it (rl, bon, eval) then has the `reward` stage upstream."""
    return cfg.objective.kind == "rm" and cfg.objective.path is None


def ensemble_members(cfg: Config) -> dict[str, Config]:
    """The members an ensemble objective has this run build, by input name: `reward_seed<s>`, the run's
    config with reward_model.seed=s, for each of objective.seeds (Coste 2023's members differ in seed).
    A stage that scores with the objective derives them (`stages.contract.objective_members`)."""
    if cfg.objective.kind != "ensemble":
        return {}
    seeded = {s: dataclasses.replace(cfg.reward_model, seed=s) for s in cfg.objective.seeds}
    return {f"reward_seed{s}": dataclasses.replace(cfg, reward_model=rm) for s, rm in seeded.items()}


def trains_reward_models(cfg: Config) -> bool:
    """Whether the objective scores with reward models this run trains: its reward artifact
    (`needs_reward_stage`) or an ensemble's members (`ensemble_members`)."""
    return needs_reward_stage(cfg) or bool(ensemble_members(cfg))


def reward_model_path(cfg: Config, inputs: dict[str, Path]) -> Path | None:
    """The reward-model folder the objective scores with (objective.path, else the reward artifact in
    `inputs`); None when the objective is not a reward model."""
    if cfg.objective.kind != "rm":
        return None
    return Path(cfg.objective.path) if cfg.objective.path else Path(inputs["reward"])


def ensemble_paths(cfg: Config, inputs: dict[str, Path]) -> list[str | Path]:
    """An ensemble's members: the folders (or hub ids) of objective.members, then the reward artifact of
    each of objective.seeds in `inputs`."""
    return [*cfg.objective.members, *(inputs[name] for name in ensemble_members(cfg))]


def objective_scorer(cfg: Config, inputs: dict[str, Path], device: str | torch.device = "cpu") -> Scorer:
    """The score RL and best-of-n maximize, and eval reports as the proxy: the `objective` group."""
    kind = cfg.objective.kind
    if kind == "gold":
        return gold_scorer(cfg, device)
    if kind == "length":
        return LengthScorer()
    if kind == "keyword":
        return KeywordScorer(list(cfg.objective.keywords))
    if kind == "ensemble":
        members = [_reward_model(cfg, path, device) for path in ensemble_paths(cfg, inputs)]
        return EnsembleScorer(members, cfg.objective.combine, cfg.objective.uwo_lambda)
    return _reward_model(cfg, reward_model_path(cfg, inputs), device)


def _reward_model(cfg: Config, path: str | Path, device: str | torch.device) -> RewardModelScorer:
    return RewardModelScorer(path, cfg.model, device=device, batch_size=cfg.objective.batch_size)


def gold_scorer(cfg: Config, device: str | torch.device = "cpu") -> Scorer | None:
    """The gold named by `gold` (`rlhf_lab.world.gold`), or None when the config has none (gold=null):
    a gold of the world, or a reward model (a folder or a hub id) scored as the objective's reward model
    is, on `device`. Every stage that scores with gold builds it here."""
    if not cfg.gold:
        return None
    if gold_source(cfg.gold) == "world":
        return GoldScorer(cfg.gold)
    return _reward_model(cfg, cfg.gold, device)


def gold_key(cfg: Config) -> str | dict | None:
    """What of `gold` a stage's cache key holds: a world gold's name (as before reward models could be
    golds, so those keys are unchanged), or a reward model's `reward_model_key`."""
    if not cfg.gold or gold_source(cfg.gold) != "folder":
        return cfg.gold
    return reward_model_key(cfg.gold)


def objective_key(cfg: Config) -> dict:
    """The objective's settings as a stage's cache key holds them: an ensemble's member folders by
    `reward_model_key` (its seeds' artifacts enter the key as the stage's inputs)."""
    return dataclasses.asdict(cfg.objective) | {
        "members": [reward_model_key(m) for m in cfg.objective.members]
    }


def reward_model_key(name: str) -> str | dict:
    """What of a reward model a cache key holds: an artifact's own key (its manifest's), wherever the
    folder lies; another folder's config.json and file sizes; a hub id as it is."""
    folder = Path(name).expanduser()
    if not folder.is_dir():
        return name
    if is_complete(folder):
        manifest = read_manifest(folder)
        return {"artifact": manifest["stage"], "key": manifest["key"]}
    files = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}
    config = (folder / "config.json").read_text() if (folder / "config.json").is_file() else None
    return {"folder": config_hash({"config": config, "files": files})}
