"""Loggers and callbacks of a stage: CSV always, W&B (offline by default), rich progress, checkpoints."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger

from rlhf_lab.config import Config

log = logging.getLogger(__name__)


TAG_LENGTH = 64  # W&B's limit on a tag
LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")  # those that get console handlers
TIP_SOURCES = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


def _not_a_tip(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("💡 Tip")


def one_line_per_message() -> None:
    """Print each of Lightning's log lines once, and none of its tips (adverts for other packages).

    Importing Lightning gives its loggers console handlers of their own; when the root logger has
    handlers (Hydra's console and job log file), Lightning's lines would print twice, once through each.
    Then Lightning's handlers go and its records reach the root's alone. Without root handlers (a
    notebook) Lightning keeps its own. Called where a stage makes its loggers, after Lightning's import.
    """
    if logging.getLogger().handlers:
        for name in LIGHTNING_LOGGERS:
            logger = logging.getLogger(name)
            for handler in [h for h in logger.handlers if type(h) is logging.StreamHandler]:
                logger.removeHandler(handler)
            logger.propagate = True
    for name in TIP_SOURCES:
        logger = logging.getLogger(name)
        if _not_a_tip not in logger.filters:
            logger.addFilter(_not_a_tip)


def job_overrides() -> list[str]:
    """The command-line overrides of this Hydra job (empty outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def sweep_name() -> str | None:
    """The multirun's folder name (its launch time) inside a Hydra sweep, else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return Path(HydraConfig.get().sweep.dir).name


def wandb_group(cfg: Config, stage: str) -> str:
    """`logger.wandb.group`, else the experiment (or stage), suffixed by the sweep's name in a multirun:
    the jobs of one sweep, and the upstream stages they built, land in one group."""
    if cfg.logger.wandb.group:
        return cfg.logger.wandb.group
    base, sweep = cfg.experiment or stage, sweep_name()
    return f"{base}/{sweep}" if sweep else base


def make_loggers(cfg: Config, stage: str, log_dir: Path) -> list[Logger]:
    one_line_per_message()
    loggers: list[Logger] = [CSVLogger(save_dir=str(log_dir), name="", version="csv")]
    wb = cfg.logger.wandb
    if wb.enabled:
        overrides = job_overrides()
        loggers.append(
            WandbLogger(
                project=wb.project,
                entity=wb.entity,
                offline=wb.offline,
                save_dir=str(log_dir),
                group=wandb_group(cfg, stage),
                job_type=stage,
                name=" ".join([stage, *overrides]),
                tags=[tag[:TAG_LENGTH] for tag in (stage, *wb.tags, *overrides)],
                config=dataclasses.asdict(cfg),
            )
        )
    return loggers


def make_callbacks(cfg: Config, checkpoint_dir: Path, every_n_steps: int) -> list:
    """A resumable `last.ckpt` in `checkpoint_dir` every N steps, and the progress bar."""
    callbacks = [
        ModelCheckpoint(
            dirpath=str(checkpoint_dir),
            save_last=True,
            save_top_k=0,
            every_n_train_steps=every_n_steps,
        ),
    ]
    if cfg.trainer.enable_progress_bar:
        callbacks.append(RichProgressBar())
    return callbacks


def finish_wandb(failed: bool) -> None:
    """Close the W&B run, even after an error, so the next job of a multirun starts clean."""
    try:
        import wandb
    except ImportError:
        return
    if wandb.run is not None:
        wandb.finish(exit_code=1 if failed else 0)


def log_stage_metrics(
    cfg: Config,
    stage: str,
    log_dir: Path,
    metrics: dict[str, float],
    table: tuple[str, list[str], list[list]] | None = None,
) -> None:
    """Log the final metrics (and one table: key, columns, rows) of a stage that has no Trainer."""
    log_dir.mkdir(parents=True, exist_ok=True)
    for logger in make_loggers(cfg, stage, log_dir):
        logger.log_metrics(metrics, step=0)
        if table is not None and hasattr(logger, "log_table"):
            logger.log_table(key=table[0], columns=table[1], data=table[2])
        logger.save()
        logger.finalize("success")


def memory_mb(device) -> tuple[float, float]:
    """(current, peak) memory of this process in MiB: allocated CUDA memory on a GPU, else the resident
    set size (Linux `/proc`: VmRSS, and the peak VmHWM, which `reset_peak_memory` restarts; elsewhere
    the peak from `getrusage`)."""
    import torch

    if torch.device(device).type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20, torch.cuda.max_memory_allocated(device) / 2**20
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)
    try:
        status = dict(
            line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line
        )
        current = int(status["VmRSS"].split()[0]) / 2**10
        peak = int(status["VmHWM"].split()[0]) / 2**10
    except (OSError, KeyError, ValueError):
        current = peak
    return current, peak


def reset_peak_memory(device) -> None:
    """Restart the peak that `memory_mb` reports from the current memory, so that a stage reports its own
    peak and not an earlier stage's or job's of the same process (a multirun runs its jobs in one
    process): CUDA's peak statistics, or Linux's VmHWM (`/proc/self/clear_refs`); elsewhere nothing."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
