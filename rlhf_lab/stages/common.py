"""What every stage receives (`Context`) and the pieces of config that enter artifact keys."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch

from rlhf_lab.config import Config
from rlhf_lab.models import load_causal_lm, load_tokenizer
from rlhf_lab.world import World, build_world, world_key


@dataclass
class Context:
    """A stage's view of the run: the typed config, the run directory and its upstream artifacts."""

    cfg: Config
    run_dir: Path
    inputs: dict[str, Path] = field(default_factory=dict)

    @cached_property
    def world(self) -> World:
        """The tiny world, built on first access (only stages that need its data or model touch it)."""
        return build_world(self.cfg.world, self.cfg.paths.world)

    def log_dir(self, stage: str) -> Path:
        return self.run_dir / stage

    @property
    def device(self) -> torch.device:
        """Where inference-only stages (collect, bon) run: the first GPU if the trainer asks for one."""
        wants_gpu = self.cfg.trainer.accelerator in ("gpu", "cuda", "auto")
        return torch.device("cuda" if wants_gpu and torch.cuda.is_available() else "cpu")

    def load_policy(self, path: str | Path):
        """(model on `device`, tokenizer) of a policy folder, each loaded from the folder itself."""
        model_cfg = dataclasses.replace(self.cfg.model, tokenizer=None)
        tokenizer = load_tokenizer(path, model_cfg)
        return load_causal_lm(path, model_cfg, tokenizer).to(self.device), tokenizer


def model_key(cfg: Config) -> dict:
    """The starting model: a named model's config, or the tiny world's config hash."""
    if cfg.model.name_or_path is not None:
        return dataclasses.asdict(cfg.model)
    return {"world": world_key(cfg.world), **dataclasses.asdict(cfg.model)}


def data_key(cfg: Config, source: str) -> dict:
    """One data source and the tokenization rules; the tiny world's sources are keyed by its hash."""
    src = getattr(cfg.data, source)
    rules = {k: getattr(cfg.data, k) for k in ("max_length", "max_prompt_length", "val_size", "on_bad_row")}
    world = world_key(cfg.world) if src.path is None else None
    return {"source": dataclasses.asdict(src), "world": world, **rules}


def trainer_key(cfg: Config) -> dict:
    """Trainer settings that change the weights (devices change the global batch; precision the maths)."""
    t = cfg.trainer
    return {
        "devices": t.devices,
        "num_nodes": t.num_nodes,
        "strategy": t.strategy,
        "precision": t.precision,
        "deterministic": t.deterministic,
    }
