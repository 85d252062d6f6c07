"""The `rlhf-lab` command: compose the Hydra config, validate it, run a stage.

rlhf-lab experiment=quickstart                 # the whole pipeline, ending in a summary table
rlhf-lab stage=sft peft=lora sft.lr=1e-4
rlhf-lab -m stage=rl algo=ppo,rloo seed=0,1 hydra/launcher=joblib
rlhf-lab --help
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from rlhf_lab.api import CONF_DIR
from rlhf_lab.artifacts import RESULT_FILE
from rlhf_lab.config import register_configs, upgrade_overrides, validate
from rlhf_lab.runinfo import write_run_info

# The metric a run returns to Hydra's sweepers (Optuna): the last stage's headline number.
OBJECTIVE = {
    "pretrain": "pretrain/val/loss",
    "sft": "sft/val/loss",
    "reward": "reward/val/loss",
    "rl": "rl/eval/gold",
    "eval": "eval/rl/gold",
}

log = logging.getLogger("rlhf_lab")


def run(cfg: DictConfig) -> float | None:
    """Validate `cfg`, run its stages, and return the last stage's objective for Hydra sweepers.

    A failure (a bad config included) is recorded in the run's `result.json`, so a sweep's report
    lists it, and then raised as usual.
    """
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    write_run_info(run_dir)
    try:
        typed = validate(cfg)  # ranges and cross-field rules fail here, before any model is built
        from rlhf_lab.pipeline import run_pipeline  # heavy imports after validation: errors come fast

        record = run_pipeline(typed, run_dir)
    except BaseException as error:
        failure = {"status": "failed", "stage": cfg.stage, "error": f"{type(error).__name__}: {error}"}
        failure["traceback"] = traceback.format_exc()
        (run_dir / RESULT_FILE).write_text(json.dumps(failure, indent=2))
        raise
    if record["status"] == "completed":
        show_summary(Path(record["artifacts"][typed.stage]), run_dir)
    return record["metrics"].get(OBJECTIVE.get(typed.stage, ""))


def show_summary(artifact: Path, run_dir: Path) -> None:
    """Copy a stage's summary table and plots (eval: summary.*) into the run directory and print it."""
    table = artifact / "summary.md"
    if not table.is_file():
        return
    for path in artifact.glob("summary.*"):
        shutil.copyfile(path, run_dir / path.name)
    log.info("summary (%s):\n%s", run_dir / "summary.md", table.read_text())


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def hydra_main(cfg: DictConfig) -> float | None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return run(cfg)


def main() -> float | None:
    register_configs()
    sys.argv[1:] = upgrade_overrides(sys.argv[1:])  # a renamed key works for now, with a message
    return hydra_main()


if __name__ == "__main__":
    main()
