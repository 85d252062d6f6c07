"""Stage chaining and the artifact cache.

`ensure(cfg, stage)` returns the artifact folder of a stage, building its upstream stages first.
Each artifact lives at `paths.artifacts/<stage>/<key>`, where the key hashes the config that
determines it and the keys of its inputs: a sweep over SFT settings pretrains once.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import ModuleType

import lightning as L

from rlhf_lab.artifacts import building, config_hash, is_complete, read_manifest
from rlhf_lab.config import Config
from rlhf_lab.stages import bon, collect, pretrain, reward, rl, sft
from rlhf_lab.stages.common import Context
from rlhf_lab.tracking import finish_wandb

log = logging.getLogger(__name__)

# Each stage module provides upstream(cfg), key_config(cfg) and build(ctx, out) -> metrics.
STAGES: dict[str, ModuleType] = {
    "pretrain": pretrain,
    "sft": sft,
    "collect": collect,
    "reward": reward,
    "rl": rl,
    "bon": bon,
}
ARTIFACT_FORMAT = 1  # bump when a stage's output changes meaning, to invalidate old artifacts


def stage_key(cfg: Config, name: str) -> str:
    stage = STAGES[name]
    inputs = {up: stage_key(cfg, up) for up in stage.upstream(cfg)}
    return config_hash(
        {"stage": name, "format": ARTIFACT_FORMAT, "config": stage.key_config(cfg), "inputs": inputs}
    )


def artifact_dir(cfg: Config, name: str) -> Path:
    return Path(cfg.paths.artifacts).resolve() / name / stage_key(cfg, name)


def plan(cfg: Config, name: str) -> list[str]:
    """The stages that `name` needs, upstream first, each once (e.g. pretrain, sft, collect, reward)."""
    order: list[str] = []

    def visit(stage: str) -> None:
        for up in STAGES[stage].upstream(cfg):
            visit(up)
        if stage not in order:
            order.append(stage)

    visit(name)
    return order


def ensure(cfg: Config, name: str, run_dir: Path, rebuild: bool = False) -> Path:
    """The artifact of stage `name`, its upstream artifacts reused when cached or else built first.

    `rebuild=True` rebuilds `name` itself even when cached (upstream stages are still reused).
    """
    artifacts: dict[str, Path] = {}
    for stage in plan(cfg, name):
        inputs = {up: artifacts[up] for up in STAGES[stage].upstream(cfg)}
        artifacts[stage] = _ensure_one(cfg, stage, run_dir, inputs, rebuild=rebuild and stage == name)
    return artifacts[name]


def _ensure_one(cfg: Config, name: str, run_dir: Path, inputs: dict[str, Path], rebuild: bool) -> Path:
    stage = STAGES[name]
    out = artifact_dir(cfg, name)
    if is_complete(out) and not rebuild:
        log.info("%s: reusing artifact %s", name, out)
        return out
    log.info("%s: building artifact %s", name, out)
    ctx = Context(cfg=cfg, run_dir=run_dir, inputs=inputs)
    with building(
        out,
        resumable=getattr(stage, "RESUMABLE", False),
        stage=name,
        key=out.name,
        config=stage.key_config(cfg),
        inputs={k: str(v) for k, v in inputs.items()},
    ) as scratch:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        failed = True
        try:
            metrics = stage.build(ctx, scratch)
            failed = False
        finally:
            finish_wandb(failed)
        (scratch / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return out


def run_stage(cfg: Config, run_dir: Path) -> dict:
    """Run `cfg.stage` (rebuilt when `cache=false`) and record which artifacts the run used."""
    out = ensure(cfg, cfg.stage, run_dir, rebuild=not cfg.cache)
    manifest = read_manifest(out)
    record = {"stage": cfg.stage, "artifact": str(out), "metrics": manifest["metrics"]}
    (run_dir / "result.json").write_text(json.dumps(record, indent=2))
    log.info("%s artifact: %s", cfg.stage, out)
    for key, value in sorted(manifest["metrics"].items()):
        log.info("  %s = %.4g", key, value)
    return record
