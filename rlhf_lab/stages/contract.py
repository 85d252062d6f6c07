"""The contract every stage keeps with the pipeline: one typed `Stage` per stage, its module's `STAGE`.

A stage is a name, the version of its code, the stages it reads, the part of the config that
determines its artifact, and `build`; optionally the settings it refuses before anything is built, the
artifacts it reads that are built under another config (`Derived`), and two capabilities. A dataclass
rather than module attributes read with `getattr`: a misspelt field fails when the stage is defined,
and a type checker holds every stage to the same signatures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from rlhf_lab.config import Config
from rlhf_lab.scorers import ensemble_members
from rlhf_lab.stages.common import Context


def no_problems(cfg: Config) -> Iterable[str]:
    return ()


@dataclass(frozen=True)
class Derived:
    """The artifact of stage `stage` under `cfg`, a copy of the run's config with some settings changed
    (e.g. the world's model at another size, `stages.common.sized`): the pipeline ensures, checks and
    keys it like any input."""

    stage: str
    cfg: Config


def no_derived(cfg: Config) -> dict[str, Derived]:
    return {}


def objective_members(cfg: Config) -> dict[str, Derived]:
    """What a stage that scores with the objective derives: an ensemble's members that this run builds
    (`scorers.ensemble_members`), each the reward stage under its own reward_model.seed (Coste 2023)."""
    return {name: Derived("reward", member) for name, member in ensemble_members(cfg).items()}


@dataclass(frozen=True)
class Stage:
    name: str
    version: int  # in the cache key: raise it whenever what the stage computes changes (pipeline.py)
    upstream: Callable[[Config], list[str]]  # the stages whose artifacts it reads
    key_config: Callable[[Config], dict]  # what determines its artifact, its own seed included
    build: Callable[[Context, Path], dict[str, float]]  # writes the artifact into the folder; metrics
    check: Callable[[Config], Iterable[str]] = no_problems  # 'key: message' for each setting it refuses
    derived: Callable[[Config], dict[str, Derived]] = no_derived  # inputs built under another config, by name
    distributed: bool = False  # trains with a Lightning Trainer: under DDP every rank takes part
    resumable: bool = False  # its scratch folder survives a crash and a rerun continues it (resume=auto)

    def __post_init__(self) -> None:
        if not isinstance(self.version, int) or self.version < 1:
            raise TypeError(f"stage {self.name}: version must be a positive int, got {self.version!r}")
