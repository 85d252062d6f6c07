"""Every seed a run derives, in one place: each stage's seed, and one name per purpose within a stage.

A stage's seed (`stage_seed`) is its own setting — `collect.seed`, `reward_model.seed`, `rl.seed`,
`dpo.seed`, `bon.seed` — or, when that is null, the run's `seed`; pretrain and sft always use `seed`,
and eval uses the RL stage's (it draws the same held-out samples as RL's evaluations). A stage seeds
everything it draws with its own seed only, and its cache key holds that seed (resolved, so a null stage
seed and one equal to `seed` are one artifact) and its inputs' keys: `rl.seed=0,1,2` trains one SFT
policy and one reward model, and a `reward_model.seed` sweep reuses one set of collected pairs.

A derived seed is ``seed * stride + offset + index``; two purposes never share a stream by accident,
and the RL stage and the eval stage draw their held-out samples from the same one on purpose. The RNG
states a resumed run restores are saved and loaded here too.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import numpy as np
import torch

# stage: the config section whose `seed` it takes (null = the run's `seed`); pretrain and sft have none
STAGE_SEEDS = {
    "collect": "collect",
    "reward": "reward_model",
    "rl": "rl",
    "dpo": "dpo",
    "bon": "bon",
    "eval": "rl",
}


def stage_seed(cfg: Any, stage: str) -> int:
    """The seed of `stage` in the run `cfg`: its section's `seed` (STAGE_SEEDS), or `cfg.seed` if null."""
    section = STAGE_SEEDS.get(stage)
    own = getattr(cfg, section).seed if section else None
    return cfg.seed if own is None else own


def without_seed(section: Any) -> dict:
    """A stage's settings for its cache key, its own `seed` left out (the key holds `stage_seed`)."""
    return {k: v for k, v in dataclasses.asdict(section).items() if k != "seed"}


PURPOSES: dict[str, tuple[int, int]] = {  # purpose: (stride, offset)
    "rollouts": (1, 0),  # RL sampling; index = the rank, so each DDP rank draws its own rollouts
    "held_out": (1, 10_007),  # held-out evaluation samples (RL's eval and the eval stage: same draws)
    "prompt_order": (1_000_003, 0),  # RL's shuffled passes over the prompts; index = the pass
    "collect_chunk": (100_003, 0),  # collect's completions; index = the resumable chunk
    "best_of_n": (1, 0),  # best-of-n's candidates
    "dpo_pairs": (1_000_003, 500_009),  # DPO's shuffled passes over a round's pairs; index = the round
    "dpo_round": (100_003, 50_021),  # online DPO's samples; index = the round
}


def derive_seed(seed: int, purpose: str, index: int = 0) -> int:
    """The seed of `purpose` (a key of PURPOSES) in a run seeded with `seed`."""
    stride, offset = PURPOSES[purpose]
    return seed * stride + offset + index


# ------------------------------------------------------------------------- RNG state for resuming
def rng_state(generator: torch.Generator) -> dict:
    """Every RNG a training step draws from (python, numpy, torch, CUDA and `generator`), to checkpoint."""
    state = {
        "python": random.getstate(),
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
        "sampler": generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _numpy_state() -> tuple:
    """numpy's RNG state with its key array as a tensor: checkpoints load with weights_only=True."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    return name, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached)


def set_rng_state(state: dict, generator: torch.Generator) -> None:
    """Restore what `rng_state` saved."""
    random.setstate(state["python"])
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    generator.set_state(state["sampler"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
