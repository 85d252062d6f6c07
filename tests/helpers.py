"""What the tests share: the fast settings of each stage, tiny models, weight and log readers, the
`rlhf-lab` command as a subprocess, and a reader for offline W&B runs. Fixtures live in conftest.py;
test files import from here, never from each other."""

from __future__ import annotations

import csv
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from wandb.proto import wandb_internal_pb2 as pb

# ------------------------------------------------------------------------------ fast settings
# `debug=fast` (conf/debug/fast.yaml): a small tiny world and short runs of every stage, CSV logging.
DEBUG = "debug=fast"

# collect, the reward model and best-of-n on the debug world (at the preset's sizes). Its barely trained
# models write near gibberish, which the default (careful) gold scores -1 almost throughout, leaving few
# gold gaps to label or measure; VADER still tells their samples apart.
SMALL = ["gold=vader", "labeler=bt"]

# two RL steps against the length scorer, checkpointed and sampled every step
RL_FAST = [
    "stage=rl",
    "objective=length",  # always varies on the small world, whose samples rarely carry sentiment
    "rl.max_steps=2",
    "rl.rollouts_per_step=8",
    "rl.sampling.max_new_tokens=12",
    "rl.eval_prompts=8",
    "rl.eval_every=2",
    "rl.samples_every=1",
    "rl.checkpoint_every=1",
    "rl.lr=1e-3",
    "rl.warmup_steps=0",
]

# the whole pipeline (experiment=quickstart) at the preset's sizes, with SMALL's gold
PIPELINE = [DEBUG, *SMALL]
STAGES = ["pretrain", "sft", "collect", "reward", "rl", "bon", "eval"]


def compose_config(*overrides: str, fast: bool = True):
    """The composed DictConfig, exactly as `rlhf-lab [debug=fast] <overrides>` would see it."""
    from rlhf_lab.api import compose_config as compose

    return compose(*([DEBUG] if fast else []), *overrides)


# ------------------------------------------------------------------------------ tiny models
TINY_LLAMA = dict(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)


def tiny_llama(seed: int = 0, **config):
    """A randomly initialized Llama in eval mode: TINY_LLAMA with `config`'s changes."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**{**TINY_LLAMA, **config})).float().eval()


# ------------------------------------------------------------------------------ reading what a stage wrote
def saved_weights(folder) -> dict[str, torch.Tensor]:
    """The tensors of <folder>/model.safetensors, as saved."""
    return load_file(str(Path(folder) / "model.safetensors"))


def policy_weights(folder) -> dict[str, torch.Tensor]:
    """The state dict of the causal LM a folder loads as (a full model, or base + LoRA adapter)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(folder)).state_dict()


def csv_column(run_dir, stage: str, column: str) -> list[float]:
    """The logged values of one column of <run_dir>/<stage>/csv/metrics.csv, blanks left out."""
    with open(Path(run_dir) / stage / "csv" / "metrics.csv") as f:
        return [float(r[column]) for r in csv.DictReader(f) if r.get(column)]


def train_losses(run_dir, stage: str) -> list[float]:
    return csv_column(run_dir, stage, f"{stage}/train/loss")


def write_jsonl(path, rows):
    """One JSON object per line; a str row is written as is (a malformed line)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# ------------------------------------------------------------------------------ the rlhf-lab command
def _env(home, **env: str) -> dict[str, str]:
    return {**os.environ, "RLHF_LAB_HOME": str(home), "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0", **env}


def rlhf_lab(*args: str, home, cwd, **env: str) -> subprocess.CompletedProcess:
    """`rlhf-lab <args>` to completion, stdout and stderr captured apart."""
    return subprocess.run(
        [sys.executable, "-m", "rlhf_lab.cli", *args],
        cwd=cwd,
        env=_env(home, **env),
        capture_output=True,
        text=True,
        timeout=900,
    )


def start(*args: str, home, cwd, **env: str) -> subprocess.Popen:
    """`rlhf-lab <args>` started in the background, stdout and stderr in one stream."""
    return subprocess.Popen(
        [sys.executable, "-m", "rlhf_lab.cli", *args],
        cwd=cwd,
        env=_env(home, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process: subprocess.Popen) -> tuple[int, str]:
    output, _ = process.communicate(timeout=900)
    return process.returncode, output


def run(*args: str, home, cwd, **env: str) -> tuple[int, str]:
    """`rlhf-lab <args>` to completion: (exit code, stdout and stderr together)."""
    return finish(start(*args, home=home, cwd=cwd, **env))


# ------------------------------------------------------------------------------ offline W&B runs
# Read back an offline W&B run's transaction log (`run-<id>.wandb`).
#
# wandb 0.31 ships no Python reader for this file (its reader moved into the Go core), so this follows
# the log's framing — a 7-byte header (":W&B", magic, version), then 32 KiB blocks of chunks, each with
# a 7-byte header (CRC32C, length, type: full/first/middle/last) — and decodes every record with
# wandb's own protobuf `Record`.
BLOCK = 32 * 1024
HEADER = struct.Struct("<4sHB")  # ident, magic, version
CHUNK = struct.Struct("<IHB")  # crc32c, length, type
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path):
    data = Path(path).read_bytes()
    ident, _, _ = HEADER.unpack_from(data)
    if ident != b":W&B":
        raise ValueError(f"{path}: not a W&B transaction log")
    pos, pending = HEADER.size, b""
    while pos + CHUNK.size <= len(data):
        left = BLOCK - pos % BLOCK
        if left < CHUNK.size:  # the block's tail is padding
            pos += left
            continue
        _, length, kind = CHUNK.unpack_from(data, pos)
        pos += CHUNK.size
        if kind == 0 and length == 0:
            continue
        pending += data[pos : pos + length]
        pos += length
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def read_run(path: Path) -> dict:
    """{'group', 'job_type', 'name', 'tags', 'config' (key -> value), 'history' (key -> [values])}."""
    run = {"config": {}, "history": {}}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run |= {"group": r.run_group, "job_type": r.job_type, "name": r.display_name}
            run["tags"] = list(r.tags)
            run["config"] |= {i.key: json.loads(i.value_json) for i in r.config.update}
        elif kind == "config":
            run["config"] |= {i.key: json.loads(i.value_json) for i in record.config.update}
        elif kind == "history":
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                run["history"].setdefault(key, []).append(json.loads(item.value_json))
    return run


# ------------------------------------------------------------------------------ the reward stage's metrics
def held_out_metrics(cfg, rm_dir) -> dict[str, float]:
    """The reward stage's validation metrics recomputed from its artifact: the exported model scores
    the held-out pairs of its collected preferences (the split training used), through pairwise_metrics."""
    from rlhf_lab.artifacts import read_manifest
    from rlhf_lab.data.formats import read_examples
    from rlhf_lab.data.preferences import PreferenceDataModule
    from rlhf_lab.scorers import RewardModelScorer
    from rlhf_lab.seeds import stage_seed
    from rlhf_lab.stages.reward import pairwise_metrics

    collect_dir = Path(read_manifest(rm_dir)["inputs"]["collect"])
    pairs, _ = read_examples(
        cfg.data.preferences, collect_dir / "preferences.jsonl", None, cfg.data.on_bad_row
    )
    split = PreferenceDataModule(
        pairs, None, 1, cfg.data.max_length, cfg.data.val_size, stage_seed(cfg, "reward")
    )
    held_out = [
        (g.prompt, g.completions[i], g.completions[j], g.gold[i] - g.gold[j])
        for g in split.val_groups
        for i, j, _ in g.pairs
    ]
    prompts, chosen, rejected, gold_gap = (list(column) for column in zip(*held_out, strict=True))
    scorer = RewardModelScorer(rm_dir, max_length=cfg.data.max_length)
    diff = scorer.raw_score(prompts, chosen) - scorer.raw_score(prompts, rejected)  # (P,)
    temperature = read_manifest(collect_dir)["metrics"].get("collect/bt_temperature")
    return pairwise_metrics(diff, torch.tensor(gold_gap), temperature)
