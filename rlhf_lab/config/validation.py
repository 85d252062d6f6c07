"""Checks of a composed config before anything is built: `_target_` allow-list, ranges and choices,
cross-field rules (`validate`); and the renamed keys that still work on the command line
(`upgrade_overrides`)."""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rlhf_lab.config.fields import ConfigError
from rlhf_lab.config.label import label_problems
from rlhf_lab.config.schema import STAGES, Config

# Hydra instantiates `_target_` callables; only these module prefixes may be named, so a config file
# from someone else cannot run arbitrary code. Extend it from the environment, which a config file
# cannot change: RLHF_LAB_ALLOWED_TARGETS="mypackage.,other.module.".
ALLOWED_TARGETS = ("rlhf_lab.", "lightning.", "torch.optim.")

# Renamed keys, old name → new name. The old name keeps working for now in command-line overrides
# (`rlhf-lab`, `api.compose`), with a message naming the new one; config files use the new names.
RENAMED = {
    "reward": "objective",
    "algo.k": "algo.samples_per_prompt",
    "collect.k": "collect.samples_per_prompt",
}
# An override: an optional prefix (+ add, ++ force-add, ~ delete), a key (a field path or a group),
# an optional @package, and an optional `=value` (a value, or a sweep `a,b`).
_OVERRIDE = re.compile(r"(?P<prefix>~|\+\+|\+)?(?P<key>[\w./-]+)(?P<rest>@.*|=.*)?", re.DOTALL)

log = logging.getLogger("rlhf_lab.config")

# Every key that names a model folder or a hub id (a model, a policy, a tokenizer, a reward model).
MODEL_PATHS = (
    "model.name_or_path",
    "model.tokenizer",
    "collect.policy",
    "bon.policy",
    "rl.policy",
    "dpo.policy",
    "objective.path",
)
# A hub repository id, as huggingface_hub accepts it: `name` or `namespace/name`, each of ASCII letters,
# digits, '-', '_' and '.', not starting with '-' or '.', with no '--' or '..', the name 96 at most.
_HUB_ID = re.compile(r"(?:(?![.-])[A-Za-z0-9_.-]+/)?(?![.-])[A-Za-z0-9_.-]{1,96}")


def upgrade_overrides(overrides: list[str]) -> list[str]:
    """`overrides` with each renamed key (RENAMED) spelled by its new name — `reward=gold`,
    `+reward.path=rm`, `~algo.k`, `algo.k=2,4` — and one message per renamed key used.
    Flags (`-m`, `--cfg job`) and values are left as they are."""
    upgraded, used = [], []
    for item in overrides:
        match = _OVERRIDE.fullmatch(item)
        if match and not item.startswith("-"):
            key = match["key"]
            for old, new in RENAMED.items():
                if key == old or key.startswith(old + "."):
                    item = f"{match['prefix'] or ''}{new}{key[len(old) :]}{match['rest'] or ''}"
                    if old not in used:
                        used.append(old)
                    break
        upgraded.append(item)
    for old in used:
        log.warning("'%s' is now '%s'; the old name works for now", old, RENAMED[old])
    return upgraded


# ------------------------------------------------------------------------------------ validation
def is_folder_or_hub_id(path: str) -> bool:
    """Whether a model path is an existing folder, or else could be a hub id (`gpt2`, `org/model`): not
    a file, not starting with /, . or ~, at most one slash, only the characters the hub allows."""
    if Path(path).is_dir():
        return True
    plausible = _HUB_ID.fullmatch(path) and "--" not in path and ".." not in path
    return bool(plausible) and not Path(path).exists()


def _model_path_problems(cfg: Config):
    """Yield 'key: no such folder: path' for each of MODEL_PATHS set to neither a folder nor a hub id."""
    for key in MODEL_PATHS:
        path = functools.reduce(getattr, key.split("."), cfg)
        if path and not is_folder_or_hub_id(str(path)):
            yield f"{key}: no such folder: {path}"


def _problems(node: Any, path: str):
    """Yield 'key: message' for every field of a dataclass tree outside its declared range."""
    for f in dataclasses.fields(node):
        value, key = getattr(node, f.name), f"{path}{f.name}"
        if dataclasses.is_dataclass(value):
            yield from _problems(value, key + ".")
            continue
        if isinstance(value, list) and any(dataclasses.is_dataclass(v) for v in value):
            for i, item in enumerate(value):  # e.g. labeler.annotators.0.flip
                yield from _problems(item, f"{key}.{i}.")
            continue
        meta = f.metadata
        if value is None or not meta:
            continue
        if meta["choices"] is not None and value not in meta["choices"]:
            yield f"{key}: {value!r} is not one of {', '.join(map(str, meta['choices']))}"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, float) and not math.isfinite(value):
                yield f"{key}: must be finite, got {value}"
            for bound, ok, word in (
                ("gt", lambda v, b: v > b, ">"),
                ("ge", lambda v, b: v >= b, ">="),
                ("lt", lambda v, b: v < b, "<"),
                ("le", lambda v, b: v <= b, "<="),
            ):
                if meta[bound] is not None and not ok(value, meta[bound]):
                    yield f"{key}: must be {word} {meta[bound]}, got {value}"


def _ensemble_problems(cfg: Config):
    """objective=ensemble: at least two members, each seed once, members that exist, and members built
    here normalized (Coste 2023 combines normalized scores)."""
    obj = cfg.objective
    if obj.kind != "ensemble":
        return
    if len(obj.members) + len(obj.seeds) < 2:
        yield (
            f"objective.seeds: objective=ensemble needs at least 2 members, got seeds {list(obj.seeds)} "
            f"and members {list(obj.members)}"
        )
    if len(set(obj.seeds)) < len(obj.seeds):
        yield f"objective.seeds: each seed once, got {list(obj.seeds)}"
    for i, path in enumerate(obj.members):
        if not is_folder_or_hub_id(path):
            yield f"objective.members.{i}: no such folder: {path}"
    if obj.seeds and not cfg.reward_model.normalize:
        yield "reward_model.normalize: an ensemble combines normalized members; it must be true"


def _cross_checks(cfg: Config):
    if cfg.world.model.num_heads % cfg.world.model.num_kv_heads:
        yield "world.model.num_kv_heads: must divide world.model.num_heads"
    if cfg.world.model.hidden_size % cfg.world.model.num_heads:
        yield "world.model.hidden_size: must be a multiple of world.model.num_heads"
    if cfg.data.max_prompt_length >= cfg.data.max_length:
        yield "data.max_prompt_length: must be < data.max_length (room is needed for the response)"
    if cfg.world.sft_fraction + cfg.world.prompt_fraction >= 1:
        yield "world.sft_fraction + world.prompt_fraction: must leave documents for pretraining"
    if cfg.model.name_or_path is None and cfg.data.max_length > cfg.world.model.max_position_embeddings:
        yield "data.max_length: exceeds world.model.max_position_embeddings"
    if cfg.labeler.kind == "file" and not cfg.labeler.path:
        yield "labeler.path: labeler=file needs the file of human labels"
    if cfg.labeler.kind == "file" and cfg.labeler.length_bonus:
        yield "labeler.length_bonus: labeler=file reads human labels, which no length bonus changes; set 0"
    lab = cfg.labeler
    if lab.kind in ("bt", "pool") and lab.temperature is None and lab.ceiling is None:
        yield f"labeler.temperature: labeler={lab.kind} needs a temperature or a ceiling"
    if lab.kind == "pool":
        names = [a.name for a in lab.annotators]
        if not names:
            yield "labeler.annotators: labeler=pool needs at least one annotator"
        if any(not n for n in names) or len(set(names)) < len(names):
            yield f"labeler.annotators: each annotator needs its own non-empty name, got {names}"
    if cfg.labeler.kind != "file" and cfg.gold is None and cfg.stage == "collect":
        yield f"labeler.kind: labeler={cfg.labeler.kind} simulates labels from the gold score, but gold=null"
    if cfg.objective.kind in ("gold", "noisy_gold") and cfg.gold is None:
        yield f"objective.kind: objective={cfg.objective.kind} needs a gold scorer, but gold=null"
    if cfg.algo.value.model == "critic" and cfg.objective.kind != "rm":
        yield "algo.value.model: a critic is initialized from the reward model, but objective.kind is not rm"
    if cfg.stage == "rl" and cfg.rl.sampling.temperature == 0:
        yield "rl.sampling.temperature: RL needs sampled rollouts (> 0); greedy ones have no policy gradient"
    if cfg.rl.rollouts_per_step % cfg.algo.minibatches:
        yield "algo.minibatches: must divide rl.rollouts_per_step"
    runs_rl = cfg.stage in ("rl", "eval") or "rl" in cfg.pipeline
    if runs_rl and cfg.trainer.strategy.startswith(("fsdp", "deepspeed")):
        yield (
            f"trainer.strategy: {cfg.trainer.strategy} shards the policy, and generation under a sharding "
            "strategy is not supported yet; use trainer=ddp for RL (peft=lora for large models)"
        )
    unknown = [name for name in cfg.pipeline if name not in STAGES]
    if unknown:
        yield f"pipeline: unknown stages {unknown}; the stages are {', '.join(STAGES)}"
    if cfg.pipeline and cfg.pipeline[-1] != cfg.stage:
        yield f"pipeline: must end with the run's stage ({cfg.stage}), got {list(cfg.pipeline)}"
    if any(n < 1 for n in cfg.bon.n):
        yield f"bon.n: every n must be >= 1, got {list(cfg.bon.n)}"
    native_cache = [
        k for k in ("world", "artifacts") if Path(getattr(cfg.paths, k)) == Path(cfg.paths.root) / k
    ]
    if cfg.repro.mode != "native" and native_cache:
        yield (
            f"repro.mode: {cfg.repro.mode} arithmetic would reuse what native arithmetic computed (paths."
            f"{' and paths.'.join(native_cache)} is the native cache); select the group, "
            f"repro={cfg.repro.mode}, which moves paths.world and paths.artifacts apart, or set both yourself"
        )
    yield from label_problems(cfg.label, cfg.pipeline)
    yield from _model_path_problems(cfg)
    yield from _ensemble_problems(cfg)


def allowed_targets() -> tuple[str, ...]:
    extra = os.environ.get("RLHF_LAB_ALLOWED_TARGETS", "")
    return ALLOWED_TARGETS + tuple(p.strip() for p in extra.split(",") if p.strip())


def _unsafe_targets(node: Any, path: str = ""):
    """Yield 'key: message' for every `_target_` outside the allow-list, anywhere in a config tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "_target_" and not str(value).startswith(allowed_targets()):
                yield (
                    f"{path}{key}: {value!r} is not under an allowed module prefix "
                    f"({', '.join(allowed_targets())}); add yours to the environment variable "
                    "RLHF_LAB_ALLOWED_TARGETS if you trust it"
                )
            yield from _unsafe_targets(value, f"{path}{key}.")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _unsafe_targets(value, f"{path}{i}.")


def validate(cfg: DictConfig) -> Config:
    """Check `_target_`s, ranges, choices and cross-field rules; return the typed config or raise
    ConfigError naming every bad key. What a stage needs of its own settings (e.g. an RL algorithm of
    its samples per prompt) the stage checks itself (`pipeline.check`), also before anything is built."""
    unsafe = list(_unsafe_targets(OmegaConf.to_container(cfg, resolve=False)))
    if unsafe:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(unsafe))
    typed: Config = OmegaConf.to_object(cfg)
    problems = [*_problems(typed, ""), *_cross_checks(typed)]
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return typed
