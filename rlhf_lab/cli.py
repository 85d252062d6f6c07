"""The `rlhf-lab` command: compose the Hydra config, validate it, run a stage.

rlhf-lab stage=pretrain
rlhf-lab stage=sft peft=lora sft.lr=1e-4
rlhf-lab -m stage=sft peft=none,lora seed=0,1
rlhf-lab --help
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from rlhf_lab.config import register_configs, validate
from rlhf_lab.runinfo import write_run_info

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
OBJECTIVE = {"pretrain": "pretrain/val/loss", "sft": "sft/val/loss", "reward": "reward/val/loss"}

log = logging.getLogger("rlhf_lab")
register_configs()


def run(cfg: DictConfig) -> float | None:
    """Validate `cfg`, run its stage, and return the stage's objective for Hydra sweepers."""
    typed = validate(cfg)  # ranges and cross-field rules fail here, before any model is built
    from rlhf_lab.pipeline import run_stage  # heavy imports after validation: errors come fast

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    write_run_info(run_dir)
    record = run_stage(typed, run_dir)
    return record["metrics"].get(OBJECTIVE.get(typed.stage, ""))


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> float | None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return run(cfg)


if __name__ == "__main__":
    main()
