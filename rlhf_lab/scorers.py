"""Scorers: `score(prompts, completions) -> (B,) float tensor`, the reward of RL and best-of-n.

All are batched, run without gradients, and return CPU float32 tensors. A prompt is a string or a
conversation (a message list) whose completion is the assistant's reply.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
import math
import re
import string
from collections import Counter
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


def word_count(text: str) -> int:
    """The number of words of a completion (whitespace-separated): the length that objective=length
    rewards and that a length-biased labeler (labeler.length_bonus, a pool annotator's) prefers."""
    return len(text.split())


class LengthScorer:
    """Number of words in the completion (`word_count`)."""

    def score(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        return torch.tensor([word_count(c) for c in completions], dtype=torch.float32)


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


# ------------------------------------------------------------------ a noisy gold (Kwa et al. 2024)
ERRORS = ("gaussian", "student_t")  # objective.error
NOISY_GOLD_SETTINGS = ("error", "df", "sigma", "seed")  # objective.*, read by objective=noisy_gold only


def _uniforms(seed: int, word: str):
    """An endless stream of uniforms in (0, 1) for `word` under `seed`, 53 bits each, from SHA-256 of
    (seed, word, i): the same in every process and on every machine (Python's `hash` is salted)."""
    for i in itertools.count():
        digest = hashlib.sha256(f"noisy_gold\0{seed}\0{word}\0{i}".encode()).digest()
        for j in range(0, 32, 8):
            yield ((int.from_bytes(digest[j : j + 8], "little") >> 11) + 0.5) / 2**53


def _check_error(error: str, df: float) -> None:
    if error not in ERRORS:
        raise ConfigError(f"objective.error: {error!r} is not one of {', '.join(ERRORS)}")
    if error == "student_t" and not df > 2:
        raise ConfigError(f"objective.df: must be > 2, got {df}")


def word_weight(word: str, seed: int, error: str, df: float = 3.0) -> float:
    """The error weight e_w of one word: a draw of mean 0 and variance 1, fixed by (seed, word). A point
    (U, V) uniform in the unit disk (by rejection from `_uniforms`), W = U² + V², is read by a polar
    method: `gaussian`, Marsaglia's, Z = U·sqrt(−2 ln W / W); `student_t`, Bailey's (1994), T =
    U·sqrt(df·(W^(−2/df) − 1) / W), t-distributed with df degrees of freedom, scaled by sqrt((df−2)/df)
    to variance 1. Both laws read the same point, so at one seed a word's two weights have the same sign
    and only the tail differs (the radius as W → 0: sqrt(−2 ln W) against W^(−1/df))."""
    _check_error(error, df)
    draws = _uniforms(seed, word)
    while True:
        u, v = 2 * next(draws) - 1, 2 * next(draws) - 1  # never 0 or ±1: W in (0, 1) once accepted
        w = u * u + v * v
        if w < 1:
            break
    if error == "gaussian":
        return u * math.sqrt(-2 * math.log(w) / w)
    t = u * math.sqrt(df * math.expm1(-2 / df * math.log(w)) / w)
    return t * math.sqrt((df - 2) / df)


def words(text: str) -> list[str]:
    """The words whose weights make a text's error: whitespace-separated, lower-cased, stripped of the
    punctuation at either end; a token of punctuation alone is no word."""
    return [w for w in (t.strip(string.punctuation) for t in text.lower().split()) if w]


class NoisyGoldScorer:
    """The gold plus an error that is a fixed function of the completion's words, light- or heavy-tailed
    at equal variance (Kwa, Thomas & Garriga-Alonso 2024, "Catastrophic Goodhart": under KL-regularized
    RL a heavy-tailed error lets the policy gain proxy reward with no gain in gold; a light-tailed one
    does not). Each word type w has a weight e_w (`word_weight`, mean 0, variance 1: gaussian or
    student_t), and error(text) = sigma · Σ_w c_w e_w / sqrt(n), c_w the count of w among the text's n
    words (`words`), 0 for a text of none. The weights are independent across words, so for any fixed
    text the error's variance over draws (seeds) is sigma² · Σ_w c_w² / n under both laws, exactly:
    sigma² for a text of distinct words. Equal variance, different tails: what differs between the laws
    is the largest weights, the words a policy can find and repeat (a word repeated k times adds
    sigma · sqrt(k) · e_w under either law)."""

    def __init__(self, gold: Scorer, error: str, sigma: float, seed: int = 0, df: float = 3.0):
        _check_error(error, df)
        if not sigma >= 0:
            raise ConfigError(f"objective.sigma: must be >= 0, got {sigma}")
        self.gold, self.error, self.sigma, self.seed, self.df = gold, error, sigma, seed, df
        self._weights: dict[str, float] = {}  # word → e_w, drawn once

    def weight(self, word: str) -> float:
        if word not in self._weights:
            self._weights[word] = word_weight(word, self.seed, self.error, self.df)
        return self._weights[word]

    def errors(self, completions: list[str]) -> torch.Tensor:
        """error(text) of each completion, (B,) float64."""
        out = []
        for text in completions:
            counts = Counter(words(text))
            n = sum(counts.values())
            total = math.fsum(c * self.weight(w) for w, c in counts.items())  # exact: order-free
            out.append(self.sigma * total / math.sqrt(n) if n else 0.0)
        return torch.tensor(out, dtype=torch.float64)

    def score(self, prompts: list[Prompt], completions: list[str]) -> torch.Tensor:
        gold = self.gold.score(prompts, completions).to(torch.float64)  # (B,)
        return (gold + self.errors(completions)).to(torch.float32)  # sigma = 0: the gold, exactly


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
    if kind == "noisy_gold":
        gold = gold_scorer(cfg, device)
        if gold is None:
            raise ConfigError("objective.kind: objective=noisy_gold needs a gold scorer, but gold=null")
        obj = cfg.objective
        return NoisyGoldScorer(gold, obj.error, obj.sigma, obj.seed, obj.df)
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
    `reward_model_key` (its seeds' artifacts enter the key as the stage's inputs); noisy_gold's settings
    only under objective=noisy_gold, so every other objective keeps the key it had before them."""
    settings = dataclasses.asdict(cfg.objective)
    if cfg.objective.kind != "noisy_gold":
        settings = {k: v for k, v in settings.items() if k not in NOISY_GOLD_SETTINGS}
    return settings | {"members": [reward_model_key(m) for m in cfg.objective.members]}


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
