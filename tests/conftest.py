"""Shared fixtures: a small tiny world and fast stage settings, composed through Hydra like the CLI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rlhf_lab.api import compose_config as compose_overrides
from rlhf_lab.config import validate

# A world and trainings small enough for seconds on 2 CPU cores; the real defaults are in conf/.
FAST = [
    "world.n_documents=3000",
    "world.vocab_size=512",
    "world.eval_prompts=64",
    "world.model.hidden_size=64",
    "world.model.num_layers=2",
    "world.model.intermediate_size=128",
    "data.max_length=64",
    "data.max_prompt_length=24",
    "data.val_size=64",
    "pretrain.max_steps=40",
    "pretrain.batch_size=16",
    "pretrain.val_every=20",
    "pretrain.val_batches=2",
    "pretrain.warmup_steps=5",
    "pretrain.samples=2",
    "pretrain.sample_tokens=12",
    "pretrain.gold_samples=16",
    "sft.max_steps=20",
    "sft.batch_size=8",
    "sft.val_every=10",
    "sft.val_batches=2",
    "sft.warmup_steps=2",
    "sft.samples=2",
    "sft.sample_tokens=12",
    "trainer.enable_progress_bar=false",
    "logger=csv",
]


@pytest.fixture(scope="session", autouse=True)
def lab_home(tmp_path_factory) -> Path:
    """Every test writes below one temporary RLHF_LAB_HOME; W&B stays offline and quiet."""
    home = tmp_path_factory.mktemp("lab")
    os.environ["RLHF_LAB_HOME"] = str(home)
    os.environ["WANDB_MODE"] = "offline"
    os.environ["WANDB_SILENT"] = "true"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    return home


def compose_config(*overrides: str, fast: bool = True):
    """The composed DictConfig, exactly as `rlhf-lab <overrides>` would see it."""
    return compose_overrides(*(FAST if fast else []), *overrides)


@pytest.fixture
def make_cfg():
    """Build a validated, typed config from overrides (fast settings first)."""
    return lambda *overrides: validate(compose_config(*overrides))
