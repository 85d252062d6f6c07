"""Stage `pretrain`: the base causal LM trained on documents packed into blocks.

On the tiny world it starts from the randomly initialized tiny Llama (`world.model`, or the named size
`model.size` of `world.sizes`, initialized with the world's tokenizer and seed), and it ends by
measuring the spread of gold scores of its samples: later stages need that variety to learn from.

Its key holds no gold: the weights do not depend on it, and keying it would rebuild every artifact
downstream for a change of gold. Its `pretrain/eval/gold_*` metrics are therefore those of the gold it
was built under, which a cached artifact keeps (its manifest's `config` does not record it).
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Iterator
from pathlib import Path

from transformers import AutoTokenizer

from rlhf_lab.config import Config, PeftConfig, TinyModelConfig
from rlhf_lab.rollout import generate_text
from rlhf_lab.scorers import gold_scorer
from rlhf_lab.seeds import stage_seed
from rlhf_lab.stages.common import Context, data_key, model_key, trainer_key
from rlhf_lab.stages.contract import Stage
from rlhf_lab.stages.lm import train_causal_lm
from rlhf_lab.world.model import build_tiny_llama


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
    with tempfile.TemporaryDirectory() as tmp:
        metrics, model, tokenizer = train_causal_lm(
            ctx,
            out,
            stage="pretrain",
            start=cfg.model.name_or_path or initial_model(ctx, Path(tmp)),
            source=cfg.data.pretrain,
            default_source=ctx.default_source(cfg.data.pretrain, "corpus"),
            mode="pack",
            train=cfg.pretrain,
            peft=PeftConfig(),  # pretraining always trains every weight
        )
    scorer = gold_scorer(cfg, next(model.parameters()).device)
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


def initial_model(ctx: Context, folder: Path) -> Path:
    """The tiny world's randomly initialized model, or with `model.size` one of that size, saved in
    `folder` with the world's tokenizer and initialized with the world's seed."""
    size = ctx.cfg.model.size
    if size is None:
        return ctx.world.init_model
    tokenizer = AutoTokenizer.from_pretrained(ctx.world.init_model)
    build_tiny_llama(ctx.cfg.world.sizes[size], tokenizer, seed=ctx.cfg.world.seed).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def check(cfg: Config) -> Iterator[str]:
    """'key: message' for a `model.size` that names no valid architecture of `world.sizes`."""
    size = cfg.model.size
    if size is None:
        return
    if size not in cfg.world.sizes:
        yield f"model.size: {size!r} is not a size of world.sizes ({', '.join(cfg.world.sizes)})"
        return
    if cfg.model.name_or_path is not None:
        yield f"model.size: a size of the tiny world's model, but model.name_or_path={cfg.model.name_or_path}"
    yield from architecture_problems(cfg.world.sizes[size], f"world.sizes.{size}", cfg.data.max_length)


def architecture_problems(arch: TinyModelConfig, key: str, max_length: int) -> Iterator[str]:
    if min(dataclasses.astuple(arch)) < 1:
        yield f"{key}: every field must be > 0, got {arch}"
    elif arch.num_heads % arch.num_kv_heads or arch.hidden_size % arch.num_heads:
        yield f"{key}: num_kv_heads must divide num_heads, which must divide hidden_size, got {arch}"
    if max_length > arch.max_position_embeddings:
        yield f"{key}.max_position_embeddings: below data.max_length={max_length}"


STAGE = Stage(
    "pretrain",
    version=1,
    upstream=upstream,
    key_config=key_config,
    build=build,
    check=check,
    distributed=True,
    resumable=True,
)
