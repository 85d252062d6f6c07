"""Stage `collect`: K completions per prompt from a policy, gold-scored, paired and labelled.

1. sample K completions for each prompt, in resumable chunks (a finished chunk is never redone);
2. score every completion with the gold scorer, when the world has one;
3. pair the completions of a prompt (all K(K-1)/2 pairs, InstructGPT, or adjacent ones);
4. label each pair with the labeler; for `bt` (and `pool`, its annotators' base T) with a `ceiling`,
   T is solved from the gold gaps. `labeler=pool` draws one simulated annotator per pair; its rows
   name it in an `annotator` column, and the metrics give each annotator's share of the pairs and
   agreement with gold, and the pool's ceiling (`collect/label_ceiling`).
Steps 1-4 for one chunk are `rlhf_lab.comparisons`, which online DPO repeats every round.

Output: `preferences.jsonl` in TRL's preference format (prompt, chosen, rejected) plus the columns
gold_chosen, gold_rejected, labeler and policy (and annotator, for `pool`); the same rows as a
`datasets` folder `preferences/`; and every sample in `samples.jsonl`. Conversational prompts (message
lists) are sampled with the policy's chat template and give conversational pairs: the prompt's messages,
and chosen and rejected as the assistant's reply `[{"role": "assistant", "content": ...}]`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import datasets
from rich.progress import track

from rlhf_lab.comparisons import label_pairs, sample_chunk
from rlhf_lab.config import Config
from rlhf_lab.data.chat import Prompt, display
from rlhf_lab.scorers import gold_key, gold_scorer
from rlhf_lab.seeds import derive_seed, stage_seed
from rlhf_lab.stages.common import Context, comparisons_key
from rlhf_lab.stages.contract import Stage
from rlhf_lab.tracking import log_stage_metrics

log = logging.getLogger(__name__)
TABLE_COLUMNS = ["prompt", "chosen", "rejected", "gold_chosen", "gold_rejected"]


def upstream(cfg: Config) -> list[str]:
    return [] if cfg.collect.policy else ["sft"]


def key_config(cfg: Config) -> dict:
    return {
        "policy": cfg.collect.policy,
        **comparisons_key(cfg),
        "gold": gold_key(cfg),
        "seed": stage_seed(cfg, "collect"),
    }


def build(ctx: Context, out: Path) -> dict[str, float]:
    cfg = ctx.cfg
    policy = str(cfg.collect.policy or ctx.inputs["sft"])
    prompts = ctx.prompts(cfg.data.prompts, "prompts", cfg.collect.num_prompts)
    samples = sample_in_chunks(ctx, policy, prompts, out / "chunks")
    rows, stats = label_pairs(cfg, samples, policy)
    write_preferences(rows, out)
    with open(out / "samples.jsonl", "w") as f:
        f.writelines(json.dumps(s) + "\n" for s in samples)
    metrics = {f"collect/{k}": v for k, v in stats.items()}
    table = [[_cell(r[c]) for c in TABLE_COLUMNS] for r in rows[:50]]
    log_stage_metrics(
        cfg, "collect", ctx.log_dir("collect"), metrics, ("collect/pairs", TABLE_COLUMNS, table)
    )
    return metrics


def _cell(value):
    """A table cell: a conversation (prompt, or a reply) as plain text."""
    if isinstance(value, list):
        return value[0]["content"] if value and value[0]["role"] == "assistant" else display(value)
    return value


def sample_in_chunks(ctx: Context, policy: str, prompts: list[Prompt], chunk_dir: Path) -> list[dict]:
    """K samples per prompt, gold-scored, one JSONL file per chunk of prompts; finished chunks are reused."""
    cfg, k, size = ctx.cfg, ctx.cfg.collect.samples_per_prompt, ctx.cfg.collect.chunk
    chunk_dir.mkdir(exist_ok=True)
    n_chunks = -(-len(prompts) // size)
    todo = [i for i in range(n_chunks) if not (chunk_dir / f"{i:05d}.jsonl").exists()]
    if len(todo) < n_chunks:
        log.info("collect: resuming, %d of %d chunks already sampled", n_chunks - len(todo), n_chunks)
    if todo:
        model, tokenizer = ctx.load_policy(policy)
        gold = gold_scorer(cfg, ctx.device)
        for i in track(todo, description=f"collect: sampling {k} per prompt"):
            chunk = prompts[i * size : (i + 1) * size]
            rows = sample_chunk(
                model,
                tokenizer,
                chunk,
                k,
                cfg.collect.sampling,
                seed=derive_seed(stage_seed(cfg, "collect"), "collect_chunk", i),
                max_prompt_length=cfg.data.max_prompt_length,
                gold=gold,
            )
            tmp = chunk_dir / f".{i:05d}.tmp"
            tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
            os.replace(tmp, chunk_dir / f"{i:05d}.jsonl")  # a chunk file exists only when complete
    return [json.loads(line) for i in range(n_chunks) for line in (chunk_dir / f"{i:05d}.jsonl").open()]


def write_preferences(rows: list[dict], out: Path) -> None:
    with open(out / "preferences.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    datasets.Dataset.from_list(rows).save_to_disk(str(out / "preferences"))


STAGE = Stage("collect", version=2, upstream=upstream, key_config=key_config, build=build, resumable=True)
