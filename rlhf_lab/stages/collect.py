"""Stage `collect`: K completions per prompt from a policy, gold-scored, paired and labelled.

1. sample K completions for each prompt, in resumable chunks (a finished chunk is never redone);
2. score every completion with the gold scorer, when the world has one;
3. pair the completions of a prompt (all K(K-1)/2 pairs, InstructGPT, or adjacent ones);
4. label each pair with the labeler; for `bt` (and `pool`, its annotators' base T) with a `ceiling`,
   T is solved from the gold gaps. `labeler=pool` draws one simulated annotator per pair; its rows
   name it in an `annotator` column, and the metrics give each annotator's share of the pairs and
   agreement with gold, and the pool's ceiling (`collect/label_ceiling`).

Output: `preferences.jsonl` in TRL's preference format (prompt, chosen, rejected) plus the columns
gold_chosen, gold_rejected, labeler and policy (and annotator, for `pool`); the same rows as a
`datasets` folder `preferences/`; and every sample in `samples.jsonl`. Conversational prompts (message
lists) are sampled with the policy's chat template and give conversational pairs: the prompt's messages,
and chosen and rejected as the assistant's reply `[{"role": "assistant", "content": ...}]`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import os
from pathlib import Path

import datasets
import torch
from rich.progress import track

from rlhf_lab.config import Config, ConfigError, SamplingConfig
from rlhf_lab.data.chat import Prompt, as_completion, display
from rlhf_lab.labelers import Comparison, PoolLabeler, bt_ceiling, make_labeler, temperature_for_ceiling
from rlhf_lab.scorers import Scorer, gold_scorer
from rlhf_lab.seeds import derive_seed, stage_seed, without_seed
from rlhf_lab.stages.common import Context, data_key, sample_completions
from rlhf_lab.tensors import repeat_each
from rlhf_lab.tracking import log_stage_metrics

log = logging.getLogger(__name__)
VERSION = 1  # in the cache key: raise it whenever what this stage computes changes (pipeline.py)
RESUMABLE = True
TABLE_COLUMNS = ["prompt", "chosen", "rejected", "gold_chosen", "gold_rejected"]


def upstream(cfg: Config) -> list[str]:
    return [] if cfg.collect.policy else ["sft"]


def key_config(cfg: Config) -> dict:
    labeler = dataclasses.asdict(cfg.labeler)
    if cfg.labeler.kind == "file":  # the labels are part of the artifact: key on the file's content
        labeler["sha256"] = hashlib.sha256(Path(cfg.labeler.path).read_bytes()).hexdigest()
    return {
        "policy": cfg.collect.policy,
        "collect": without_seed(cfg.collect),
        "labeler": labeler,
        "prompts": data_key(cfg, "prompts"),
        "gold": cfg.gold,
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
                gold=gold_scorer(cfg),
            )
            tmp = chunk_dir / f".{i:05d}.tmp"
            tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
            os.replace(tmp, chunk_dir / f"{i:05d}.jsonl")  # a chunk file exists only when complete
    return [json.loads(line) for i in range(n_chunks) for line in (chunk_dir / f"{i:05d}.jsonl").open()]


def sample_chunk(
    model,
    tokenizer,
    prompts: list[Prompt],
    k: int,
    sampling: SamplingConfig,
    seed: int,
    gold: Scorer | None,
    max_prompt_length: int,
) -> list[dict]:
    completions = sample_completions(model, tokenizer, prompts, k, sampling, seed, max_prompt_length)
    repeated = repeat_each(prompts, k)  # (N*K,) prompt i at rows i*K .. i*K+K-1
    scores = gold.score(repeated, completions).view(len(prompts), k).tolist() if gold else None
    return [
        {"prompt": p, "completions": completions[i * k : (i + 1) * k], "gold": scores[i] if gold else None}
        for i, p in enumerate(prompts)
    ]


def candidate_pairs(k: int, mode: str) -> list[tuple[int, int]]:
    """Index pairs among K completions: all K(K-1)/2 (InstructGPT) or the K-1 adjacent ones."""
    return list(itertools.combinations(range(k), 2)) if mode == "all" else [(i, i + 1) for i in range(k - 1)]


def comparisons_of(samples: list[dict], mode: str) -> list[tuple[int, Comparison]]:
    """(group, comparison) for each candidate pair of each prompt's samples; group = the sample's index.
    A conversational prompt is compared (and looked up in a human-label file) as its plain text."""
    out = []
    for group, s in enumerate(samples):
        for i, j in candidate_pairs(len(s["completions"]), mode):
            a, b = s["completions"][i], s["completions"][j]
            if a != b and a.strip() and b.strip():  # identical or empty samples make no useful pair
                gold_a, gold_b = (s["gold"][i], s["gold"][j]) if s["gold"] else (None, None)
                out.append((group, Comparison(display(s["prompt"]), a, b, gold_a, gold_b)))
    return out


def bt_temperature(cfg: Config, gaps: torch.Tensor | None) -> float | None:
    """labeler.temperature, or the T whose Bradley–Terry ceiling on these gold gaps is labeler.ceiling."""
    lab = cfg.labeler
    if lab.kind not in ("bt", "pool") or lab.temperature is not None:
        return lab.temperature
    try:
        return temperature_for_ceiling(gaps, lab.ceiling)
    except ValueError as err:  # e.g. too many tied gold scores for so high a ceiling
        raise ConfigError(
            f"labeler.ceiling={lab.ceiling}: {err}; lower it or set labeler.temperature"
        ) from err


def label_pairs(cfg: Config, samples: list[dict], policy: str) -> tuple[list[dict], dict]:
    """Label every candidate pair; rows in TRL's preference format plus gold, labeler, policy, group."""
    pairs = comparisons_of(samples, cfg.collect.pairs)
    gaps = torch.tensor([c.gold_a - c.gold_b for _, c in pairs]) if cfg.gold else None
    temperature = bt_temperature(cfg, gaps)
    lab = cfg.labeler
    labeler = make_labeler(
        lab.kind,
        temperature=temperature or 1.0,
        epsilon=lab.epsilon,
        path=lab.path,
        annotators=lab.annotators,
        seed=stage_seed(cfg, "collect"),
    )
    comparisons = [c for _, c in pairs]
    labels = labeler.label(comparisons)
    annotators = labeler.annotators_of(comparisons) if isinstance(labeler, PoolLabeler) else None
    rows = []
    for n, ((group, c), label) in enumerate(zip(pairs, labels, strict=True)):
        if label is None:
            continue
        (chosen, g_c), (rejected, g_r) = ((c.a, c.gold_a), (c.b, c.gold_b))[:: 1 if label else -1]
        prompt = samples[group]["prompt"]  # a string, or a conversation: then the completions are replies
        rows.append(
            {
                "prompt": prompt,
                "chosen": as_completion(prompt, chosen),
                "rejected": as_completion(prompt, rejected),
                "gold_chosen": g_c,
                "gold_rejected": g_r,
                "labeler": lab.kind,
                "policy": policy,
                "group": group,
            }
            | ({"annotator": annotators[n]} if annotators else {})
        )
    stats = {"prompts": len(samples), "pairs": len(rows), "unlabelled": len(pairs) - len(rows)}
    if cfg.gold:
        gold = torch.tensor([g for s in samples for g in s["gold"]])
        agree = sum(r["gold_chosen"] > r["gold_rejected"] for r in rows) / max(1, len(rows))
        stats |= {"gold_mean": gold.mean().item(), "gold_std": gold.std().item(), "gold_agreement": agree}
    if isinstance(labeler, PoolLabeler):
        stats |= pool_stats(labeler, comparisons, rows)
    elif temperature is not None and gaps is not None:
        stats |= {
            "bt_temperature": temperature,
            "bt_ceiling": bt_ceiling(gaps, torch.zeros_like(gaps), temperature),
        }
    return rows, stats


def pool_stats(labeler: PoolLabeler, comparisons: list[Comparison], rows: list[dict]) -> dict[str, float]:
    """The pool's base temperature and ceiling (E[max(p, 1 − p)] of the pair's label probability over
    the annotators), and per annotator its share of the pairs and its agreement with gold."""
    p = torch.tensor([labeler.probability(c, i) for i, c in enumerate(comparisons)], dtype=torch.float64)
    stats = {"pool_temperature": labeler.temperature, "label_ceiling": torch.maximum(p, 1 - p).mean().item()}
    for a in labeler.annotators:
        mine = [r for r in rows if r["annotator"] == a.name]
        untied = [r for r in mine if r["gold_chosen"] != r["gold_rejected"]]
        stats[f"pool/{a.name}/share"] = len(mine) / max(1, len(rows))
        stats[f"pool/{a.name}/gold_agreement"] = sum(
            r["gold_chosen"] > r["gold_rejected"] for r in untied
        ) / max(1, len(untied))
    return stats


def write_preferences(rows: list[dict], out: Path) -> None:
    with open(out / "preferences.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    datasets.Dataset.from_list(rows).save_to_disk(str(out / "preferences"))
