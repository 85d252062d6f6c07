"""Stage `sft`: supervised fine-tuning on prompt/response pairs, the loss on response tokens only.

Starts from `model.name_or_path`, or from the tiny world's pretrain artifact; full or LoRA (`peft=`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from rlhf_lab.config import Config
from rlhf_lab.seeds import stage_seed
from rlhf_lab.stages.common import Context, data_key, model_key, trainer_key
from rlhf_lab.stages.contract import Stage
from rlhf_lab.stages.lm import train_causal_lm


def upstream(cfg: Config) -> list[str]:
    return [] if cfg.model.name_or_path else ["pretrain"]


def key_config(cfg: Config) -> dict:
    return {
        "model": model_key(cfg),
        "data": data_key(cfg, "sft"),
        "peft": dataclasses.asdict(cfg.peft),
        "train": dataclasses.asdict(cfg.sft),
        "seed": stage_seed(cfg, "sft"),
        "trainer": trainer_key(cfg),
    }


def build(ctx: Context, out: Path) -> dict[str, float]:
    cfg = ctx.cfg
    start = cfg.model.name_or_path or ctx.inputs["pretrain"]
    metrics, _, _ = train_causal_lm(
        ctx,
        out,
        stage="sft",
        start=start,
        source=cfg.data.sft,
        default_source=ctx.default_source(cfg.data.sft, "sft"),
        mode="pairs",
        train=cfg.sft,
        peft=cfg.peft,
    )
    return metrics


STAGE = Stage(
    "sft",
    version=1,
    upstream=upstream,
    key_config=key_config,
    build=build,
    distributed=True,
    resumable=True,
)
