"""The `rlhf-lab` command: compose the Hydra config, validate it, run a stage.

rlhf-lab experiment=quickstart                 # the whole pipeline, ending in a summary table
rlhf-lab stage=sft peft=lora sft.lr=1e-4
rlhf-lab -m stage=rl algo=ppo,rloo seed=0,1 hydra/launcher=joblib
rlhf-lab repro=portable experiment=quickstart  # the same numbers on any x86-64 CPU (docs/reproducibility.md)
rlhf-lab --help

A bad config, a bad data row or a missing file (`errors.UserError`, `OSError`) ends the command with its
message alone on stderr and exit code 1 (`HYDRA_FULL_ERROR=1` prints the traceback too); any other error
is a bug and prints its traceback. A SIGTERM ends it with exit code 143, after the Lightning stage that
was training saved a checkpoint of the step reached (`faults.SaveOnSigterm`): the same command resumes.
Either way the run's `result.json` records what happened ("failed" with the traceback, or "stopped").
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig

from rlhf_lab.api import CONF_DIR
from rlhf_lab.artifacts import RESULT_FILE
from rlhf_lab.config import Config, register_configs, upgrade_overrides, validate
from rlhf_lab.errors import Stopped, UserError
from rlhf_lab.repro import pin
from rlhf_lab.runinfo import add_run_info, write_run_info

# The metric a run returns to Hydra's sweepers (Optuna): the last stage's headline number.
OBJECTIVE = {
    "pretrain": "pretrain/val/loss",
    "sft": "sft/val/loss",
    "reward": "reward/val/loss",
    "rl": "rl/eval/gold",
    "dpo": "dpo/eval/gold",
    "eval": "eval/rl/gold",
}

FOR_PEOPLE = (UserError, OSError)  # errors whose message is the whole story: printed without a traceback

log = logging.getLogger("rlhf_lab")


class ErrorMessage(CompactHydraException):
    """An error for people, as Hydra reports its own: the message alone, no traceback."""


def run(cfg: DictConfig) -> float | None:
    """Validate `cfg`, run its stages, and return the last stage's objective for Hydra sweepers.

    A failure (a bad config included) or a SIGTERM is recorded in the run's `result.json`, so a sweep's
    report lists it, and then raised as usual.
    """
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    write_run_info(run_dir)
    try:
        with stop_on_sigterm():
            typed = validate(cfg)  # ranges and cross-field rules fail here, before any model is built
            add_run_info(run_dir, repro=pin(typed.repro.mode, typed.trainer.accelerator))  # before torch runs
            if typed.stage == "label":  # a page served until stopped, not an artifact
                return run_label(typed, run_dir)
            from rlhf_lab.pipeline import run_pipeline  # heavy imports after validation: errors come fast

            record = run_pipeline(typed, run_dir)
    except BaseException as error:
        (run_dir / RESULT_FILE).write_text(json.dumps(failure_record(cfg.stage, error), indent=2))
        raise
    if record["status"] == "completed":
        show_summary(Path(record["artifacts"][typed.stage]), run_dir)
    return record["metrics"].get(OBJECTIVE.get(typed.stage, ""))


def run_label(cfg: Config, run_dir: Path) -> None:
    """stage=label: the labeling page (rlhf_lab/label/) for `label.pairs`, or for the pairs of this
    config's collect artifact (built first if missing), or for the blind comparison `label.judge` (its
    pairs written to the run folder, its labels to `label.judge_labels`), until Ctrl-C or SIGTERM;
    result.json then records the label file and its summary's numbers."""
    from rlhf_lab.label.serve import serve
    from rlhf_lab.label.summary import metrics

    settings, pairs = cfg.label, cfg.label.pairs
    if settings.judge:
        from rlhf_lab.report.judge import comparison_file

        pairs = str(comparison_file(cfg, run_dir))
        settings = dataclasses.replace(settings, labels=settings.judge_labels)
    elif pairs is None:
        from rlhf_lab.pipeline import ensure

        pairs = str(ensure(cfg, "collect", run_dir))
    seed = cfg.seed if settings.seed is None else settings.seed
    summary = serve(settings, pairs, seed, run_dir, overrides=list(HydraConfig.get().overrides.task))
    labels = str(Path(settings.labels).expanduser().resolve())
    record = {"status": "completed", "stage": "label", "pairs": pairs, "labels": labels}
    if settings.judge:
        record["judge"] = list(settings.judge)
    (run_dir / RESULT_FILE).write_text(json.dumps(record | {"metrics": metrics(summary)}, indent=2))


def show_summary(artifact: Path, run_dir: Path) -> None:
    """Copy a stage's summary table and plots (eval: summary.*) into the run directory and print it."""
    table = artifact / "summary.md"
    if not table.is_file():
        return
    for path in artifact.glob("summary.*"):
        shutil.copyfile(path, run_dir / path.name)
    log.info("summary (%s):\n%s", run_dir / "summary.md", table.read_text())


def failure_record(stage: str, error: BaseException) -> dict:
    """What `result.json` says of a run that ended with `error`: stopped (SIGTERM) or failed."""
    if stopped(error):
        return {"status": "stopped", "stage": stage, "error": "stopped by SIGTERM"}
    return {
        "status": "failed",
        "stage": stage,
        "error": f"{type(error).__name__}: {error}",
        "traceback": traceback.format_exc(),
    }


def stopped(error: BaseException) -> bool:
    """Whether `error` ends a run stopped by SIGTERM (Lightning's own exception only once it is imported:
    a config error must not wait for Lightning's import)."""
    if isinstance(error, Stopped):
        return True
    if "lightning.pytorch" not in sys.modules:
        return False
    from rlhf_lab.faults import stopped_by_sigterm

    return stopped_by_sigterm(error)


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """SIGTERM raises `errors.Stopped` (exit code 143, `finally` blocks run: locks released, a resumable
    stage's scratch folder kept) instead of killing the process on the spot.

    While a Lightning Trainer runs, its own handler is installed and calls this one: then this one
    does nothing and Lightning stops after the current batch (`faults.SaveOnSigterm` saves a checkpoint).
    """
    if threading.current_thread() is not threading.main_thread():  # only the main thread gets signals
        yield
        return

    def handler(signum, frame) -> None:
        if signal.getsignal(signal.SIGTERM) is handler:
            raise Stopped()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def for_people(error: BaseException) -> BaseException:
    """The exception the command ends with: exit code 143 for a SIGTERM; the message alone for an error
    in the user's input (unless HYDRA_FULL_ERROR=1); `error` itself otherwise (a bug: its traceback)."""
    if stopped(error):
        log.warning("stopped by SIGTERM (exit code 143); the same command resumes (resume=auto)")
        return Stopped()
    if not isinstance(error, FOR_PEOPLE) or os.environ.get("HYDRA_FULL_ERROR") == "1":
        return error
    if HydraConfig.get().mode == RunMode.MULTIRUN:  # Hydra reports the first failed job of a sweep only
        log.error("job %s failed: %s", HydraConfig.get().job.num, error)
    return ErrorMessage(str(error))


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def hydra_main(cfg: DictConfig) -> float | None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return run(cfg)
    except BaseException as error:
        reported = for_people(error)
        if reported is error:
            raise
        raise reported from None


def main() -> float | None:
    register_configs()
    sys.argv[1:] = upgrade_overrides(sys.argv[1:])  # a renamed key works for now, with a message
    return hydra_main()


if __name__ == "__main__":
    main()
