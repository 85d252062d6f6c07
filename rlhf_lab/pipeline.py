"""Stage chaining and the artifact cache.

`ensure(cfg, stage)` returns the artifact folder of a stage, building its upstream stages first.
Each artifact lives at `paths.artifacts/<stage>/<key>`, where the key hashes the config that
determines it (the stage's `key_config`, its own seed included: `seeds.stage_seed`), the keys of its
inputs and the stage's `version`: a sweep over SFT settings pretrains once, and parallel jobs that
need the same missing artifact build it once (`artifacts.claim`). An input built under another config
(a stage's `derived`, e.g. the reward model's backbone pretrained at another size) is ensured, checked
and keyed the same way, under its own config.

The cache knows the code: each stage's `version` (an integer, in its `Stage`) is raised whenever what
the stage computes changes, so an upgrade that changes a stage's output invalidates its old artifacts and
everything downstream of them. Each manifest records the git commit it was built at, and reusing an
artifact built at another commit says so in the log (`reward: reusing artifact … built at commit
abc1234, this is def5678`).

`run_pipeline(cfg)` runs the stages of `cfg.pipeline` (or `cfg.stage` alone) in order.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import lightning as L
import torch.distributed as dist

from rlhf_lab.artifacts import (
    LOG_FILE,
    RESULT_FILE,
    building,
    claim,
    code_commit,
    config_hash,
    is_complete,
    process_rank,
    read_manifest,
    scratch_dir,
    worker_rank,
)
from rlhf_lab.config import Config, ConfigError
from rlhf_lab.seeds import stage_seed
from rlhf_lab.stages import bon, collect, evaluate, pretrain, reward, sft
from rlhf_lab.stages.common import CHECKPOINTS, Context
from rlhf_lab.stages.contract import Stage
from rlhf_lab.stages.dpo import stage as dpo
from rlhf_lab.stages.rl import stage as rl
from rlhf_lab.tracking import finish_wandb

log = logging.getLogger(__name__)

# Every stage, each held to the one contract (stages/contract.py), in the order of the data flow.
STAGES: dict[str, Stage] = {
    stage.name: stage
    for stage in (
        pretrain.STAGE,
        sft.STAGE,
        collect.STAGE,
        reward.STAGE,
        rl.STAGE,
        dpo.STAGE,
        bon.STAGE,
        evaluate.STAGE,
    )
}
ARTIFACT_FORMAT = 1  # bump when the layout of every artifact changes; a stage's own change bumps its version


def stage_key(cfg: Config, name: str) -> str:
    """The hash of what determines stage `name`'s artifact: its code's version, its config (its own seed
    included) and its inputs' keys; nothing else, so a change downstream never rebuilds it."""
    stage = STAGES[name]
    inputs = {up: stage_key(cfg, up) for up in stage.upstream(cfg)}
    inputs |= {role: stage_key(d.cfg, d.stage) for role, d in stage.derived(cfg).items()}
    return config_hash(
        {
            "stage": name,
            "format": ARTIFACT_FORMAT,
            "version": stage.version,
            "config": stage.key_config(cfg),
            "inputs": inputs,
        }
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
    return ensure_with_inputs(cfg, name, run_dir, rebuild)[name]


def ensure_with_inputs(
    cfg: Config, name: str, run_dir: Path, rebuild: bool = False, known: dict[str, Path] | None = None
) -> dict[str, Path]:
    """Like `ensure`, returning the artifacts of `name` and of every stage it needs, by stage;
    stages in `known` (already ensured by this run) are taken from it."""
    check(cfg, name)
    artifacts: dict[str, Path] = dict(known or {})
    for stage in plan(cfg, name):
        if stage in artifacts:
            continue
        inputs = {up: artifacts[up] for up in STAGES[stage].upstream(cfg)}
        inputs |= {  # built under their own config; their logs in a folder of this run named after them
            role: ensure(d.cfg, d.stage, run_dir / role) for role, d in STAGES[stage].derived(cfg).items()
        }
        artifacts[stage] = _ensure_one(cfg, stage, run_dir, inputs, rebuild=rebuild and stage == name)
    return artifacts


def check(cfg: Config, name: str) -> None:
    """Raise ConfigError naming every setting that a stage of `name`'s plan, or of a derived input's
    plan, cannot run with."""
    found = _problems(cfg, name)
    if found:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(found))


def _problems(cfg: Config, name: str) -> list[str]:
    found = []
    for stage in plan(cfg, name):
        found += STAGES[stage].check(cfg)
        for d in STAGES[stage].derived(cfg).values():
            found += [p for p in _problems(d.cfg, d.stage) if p not in found]
    return found


def _ensure_one(cfg: Config, name: str, run_dir: Path, inputs: dict[str, Path], rebuild: bool) -> Path:
    out = artifact_dir(cfg, name)
    if _distributed() or worker_rank():
        _ensure_distributed(cfg, name, out, run_dir, inputs, rebuild)
        return out
    with claim(out):  # a parallel job building the same artifact is waited for
        if is_complete(out) and not rebuild:
            log_reuse(name, out)
        else:
            _build(cfg, name, out, run_dir, inputs)
    if _distributed():  # its Trainer started the other ranks (Lightning DDP): they wait for the artifact
        dist.barrier()
    return out


def log_reuse(name: str, out: Path) -> None:
    """Log the reuse of a complete artifact, and the commit it was built at when that is not this one's."""
    built, now = read_manifest(out).get("commit"), code_commit()
    if built == now:
        log.info("%s: reusing artifact %s", name, out)
    else:
        log.info(
            "%s: reusing artifact %s built at commit %s, this is %s", name, out, _short(built), _short(now)
        )


def _short(commit: str | None) -> str:
    """abc1234 for a full hash, abc1234-dirty with uncommitted changes, 'unknown' when not recorded."""
    if not commit:
        return "unknown"
    sha, dirty, _ = commit.partition("-dirty")
    return sha[:7] + ("-dirty" if dirty else "")


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _ensure_distributed(
    cfg: Config, name: str, out: Path, run_dir: Path, inputs: dict[str, Path], rebuild: bool
) -> None:
    """One stage in a multi-process job (Lightning DDP re-runs this command on every rank).

    Rank 0 decides whether to build and alone writes the artifact; the other ranks take part in the
    stages that train (the same Trainer calls in the same order) with a private scratch folder that is
    thrown away, and skip the inference-only stages. A barrier after each stage keeps the ranks in step
    and lets no rank read an artifact before rank 0 has published it. Before its first Trainer call a
    non-zero rank has no process group yet: the stages rank 0 finished before starting the group are
    complete, and the one it is training is not.
    """
    build = rebuild or not is_complete(out)
    if _distributed():
        decision = [build]
        dist.broadcast_object_list(decision, src=0)
        build = decision[0]
    if not worker_rank():
        if build:
            _build(cfg, name, out, run_dir, inputs)
        else:
            log_reuse(name, out)
    elif build and STAGES[name].distributed:
        private = out.parent / f".{out.name}.rank{process_rank()}"
        shutil.rmtree(private, ignore_errors=True)
        private.mkdir(parents=True)
        try:
            ctx = Context(cfg=cfg, run_dir=run_dir, inputs=inputs, checkpoint_dir=scratch_dir(out))
            L.seed_everything(stage_seed(cfg, name), workers=True, verbose=False)
            STAGES[name].build(ctx, private)
        finally:
            shutil.rmtree(private, ignore_errors=True)
    if _distributed():
        dist.barrier()


def _build(cfg: Config, name: str, out: Path, run_dir: Path, inputs: dict[str, Path]) -> None:
    stage = STAGES[name]
    log.info("%s: building artifact %s", name, out)
    with building(
        out,
        resumable=stage.resumable and cfg.resume == "auto",
        stage=name,
        key=out.name,
        version=stage.version,
        seed=stage_seed(cfg, name),
        config=stage.key_config(cfg),
        inputs={k: str(v) for k, v in inputs.items()},
    ) as scratch:
        ctx = Context(cfg=cfg, run_dir=run_dir, inputs=inputs, checkpoint_dir=scratch)
        L.seed_everything(stage_seed(cfg, name), workers=True, verbose=False)
        failed = True
        try:
            metrics = stage.build(ctx, scratch)
            failed = False
        finally:
            finish_wandb(failed)
        (scratch / "metrics.json").write_text(json.dumps(metrics, indent=2))
        shutil.rmtree(scratch / CHECKPOINTS, ignore_errors=True)  # a finished artifact needs no resume state
        csv_log = ctx.log_dir(name) / "csv" / "metrics.csv"
        if csv_log.is_file():  # the training curves travel with the artifact, for reports of cache hits
            shutil.copyfile(csv_log, scratch / LOG_FILE)


def stages_to_run(cfg: Config) -> list[str]:
    return list(cfg.pipeline) or [cfg.stage]


def run_pipeline(cfg: Config, run_dir: Path) -> dict:
    """Run the stages of `cfg.pipeline` (or `cfg.stage`) in order, rebuilding each of them when
    `cache=false`, and write `result.json`: every artifact the run used and each stage's metrics."""
    for name in stages_to_run(cfg):  # every stage's own settings, before the first one is built
        check(cfg, name)
    artifacts: dict[str, Path] = {}
    metrics: dict[str, dict] = {}
    for name in stages_to_run(cfg):
        artifacts = ensure_with_inputs(cfg, name, run_dir, rebuild=not cfg.cache, known=artifacts)
        if worker_rank():  # rank 0 records the run
            continue
        metrics[name] = read_manifest(artifacts[name])["metrics"]
        log.info("%s artifact: %s", name, artifacts[name])
    if worker_rank():
        return {"status": "worker", "artifacts": {k: str(v) for k, v in artifacts.items()}, "metrics": {}}
    for key, value in sorted(metrics[cfg.stage].items()):
        log.info("  %s = %.4g", key, value)
    record = {
        "status": "completed",
        "stage": cfg.stage,
        "artifacts": {k: str(v) for k, v in artifacts.items()},
        "metrics": {k: v for stage_metrics in metrics.values() for k, v in stage_metrics.items()},
    }
    (run_dir / RESULT_FILE).write_text(json.dumps(record, indent=2))
    return record
