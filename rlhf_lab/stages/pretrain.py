"""Stage `pretrain`: the base causal LM trained on documents packed into blocks.

On the tiny world it starts from the randomly initialized tiny Llama, and it ends by measuring the
spread of gold scores of its samples: later stages need that variety to learn from.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from rlhf_lab.config import Config, PeftConfig
from rlhf_lab.rollout import generate_text
from rlhf_lab.scorers import gold_scorer
from rlhf_lab.seeds import stage_seed
from rlhf_lab.stages.common import Context, data_key, model_key, trainer_key
from rlhf_lab.stages.contract import Stage
from rlhf_lab.stages.lm import train_causal_lm


def upstream(cfg: Config) -> list[str]:
    return []


def key_config(cfg: Config) -> dict:
    return {
        "model": model_key(cfg),
        "data": data_key(cfg, "pretrain"),
        "train": dataclasses.asdict(cfg.pretrain),
        "seed": stage_seed(cfg, "pretrain"),
        "trainer": trainer_key(cfg),
    }


def build(ctx: Context, out: Path) -> dict[str, float]:
    cfg = ctx.cfg
    start = cfg.model.name_or_path or ctx.world.init_model
    metrics, model, tokenizer = train_causal_lm(
        ctx,
        out,
        stage="pretrain",
        start=start,
        source=cfg.data.pretrain,
        default_source=ctx.default_source(cfg.data.pretrain, "corpus"),
        mode="pack",
        train=cfg.pretrain,
        peft=PeftConfig(),  # pretraining always trains every weight
    )
    scorer = gold_scorer(cfg)
    if cfg.pretrain.gold_samples and scorer is not None:
        prompts = ctx.prompts(cfg.data.eval_prompts, "eval_prompts", cfg.pretrain.gold_samples)
        completions = generate_text(
            model,
            tokenizer,
            prompts,
            max_prompt_length=cfg.data.max_prompt_length,
            max_new_tokens=cfg.pretrain.sample_tokens,
            temperature=1.0,
        )
        gold = scorer.score(prompts, completions)
        metrics |= {
            "pretrain/eval/gold_mean": gold.mean().item(),
            "pretrain/eval/gold_std": gold.std().item(),
        }
    return metrics


STAGE = Stage(
    "pretrain",
    version=1,
    upstream=upstream,
    key_config=key_config,
    build=build,
    distributed=True,
    resumable=True,
)
