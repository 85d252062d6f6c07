"""The settings shared by every stage: the world, paths, the model, data, LoRA, the Trainer, logging."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rlhf_lab.config.fields import setting


# --------------------------------------------------------------------------------------- world
@dataclass
class TinyModelConfig:
    hidden_size: int = setting(192, "width of the tiny Llama", gt=0)
    num_layers: int = setting(4, "transformer blocks", gt=0)
    num_heads: int = setting(4, "attention heads", gt=0)
    num_kv_heads: int = setting(2, "key/value heads (grouped-query attention)", gt=0)
    intermediate_size: int = setting(512, "MLP width", gt=0)
    max_position_embeddings: int = setting(256, "longest sequence the model accepts", gt=0)


# Named sizes of the world's model, for reward models of several sizes (Gao 2022's proxy-size axis,
# Stiennon 2020's size slope): 78k, 230k, 1.05M and 3.67M parameters over the default 2,048 tokens.
SIZES = {
    "xs": TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=96),
    "s": TinyModelConfig(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=192),
    "m": TinyModelConfig(hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=384),
    "l": TinyModelConfig(hidden_size=256, num_layers=4, num_heads=8, num_kv_heads=4, intermediate_size=768),
}


@dataclass
class WorldConfig:
    seed: int = setting(0, "seed of the corpus generator, the tokenizer data and the initial weights")
    n_documents: int = setting(40_000, "review documents generated", ge=100)
    vocab_size: int = setting(2048, "byte-level BPE vocabulary size", ge=300)
    sft_fraction: float = setting(0.2, "share of documents turned into SFT pairs", gt=0, lt=1)
    prompt_fraction: float = setting(0.1, "share of documents whose openings are prompts", gt=0, lt=1)
    eval_prompts: int = setting(512, "held-out prompts for evaluation", ge=1)
    model: TinyModelConfig = setting(TinyModelConfig(), "architecture of the tiny Llama")
    sizes: dict[str, TinyModelConfig] = setting(
        SIZES,
        "named architectures of the world's model (model.size, reward_model.backbone), each pretrained "
        "on the world's corpus with its tokenizer when a run asks for it; not part of the world's key",
    )
    conversational: bool = setting(
        False, "chat data: prompts as user messages, SFT pairs as user/assistant turns, a chat template"
    )


# --------------------------------------------------------------------------------------- paths
@dataclass
class PathsConfig:
    root: str = setting("lab", "everything rlhf_lab writes lives below this folder")
    world: str = setting("${paths.root}/world", "cache of built tiny worlds, one folder per world config")
    artifacts: str = setting("${paths.root}/artifacts", "stage outputs, one folder per config hash")
    runs: str = setting("${paths.root}/runs", "Hydra run directories (logs, resolved configs)")


# --------------------------------------------------------------------------------------- model
@dataclass
class ModelConfig:
    name_or_path: str | None = setting(
        None, "hub name or local HF directory of the starting model; null = the tiny world's"
    )
    tokenizer: str | None = setting(None, "tokenizer name or path; null = the model's own")
    size: str | None = setting(
        None, "the tiny world's model at a named size (a key of world.sizes); null = world.model"
    )
    dtype: str = setting(
        "float32", "weights dtype when loading", choices=["float32", "bfloat16", "float16", "auto"]
    )
    attn_implementation: str | None = setting("sdpa", "attention kernel (sdpa, eager, flash_attention_2)")
    trust_remote_code: bool = setting(False, "allow a hub repository to run its own code")


# ---------------------------------------------------------------------------------------- data
@dataclass
class SourceConfig:
    path: str | None = setting(
        None, "hub dataset name, JSON/JSONL/Parquet/CSV file, or save_to_disk folder; null = the tiny world's"
    )
    name: str | None = setting(None, "dataset configuration name (hub datasets)")
    split: str = setting("train", "split to read")
    format: str = setting(
        "auto",
        "row format: auto (from the columns and value types), a TRL format (standard or conversational), "
        "or a classic dataset's native layout (data.presets)",
        choices=["auto", "text", "prompt_completion", "messages", "prompt", "preference"]
        + ["hh_rlhf", "summarize_comparisons", "tldr_sft", "ultrafeedback", "shp"],
    )
    max_rows: int | None = setting(None, "read at most this many rows", gt=0)


@dataclass
class DataConfig:
    pretrain: SourceConfig = setting(SourceConfig(format="text"), "documents for pretraining")
    sft: SourceConfig = setting(SourceConfig(format="prompt_completion"), "prompt/response pairs for SFT")
    prompts: SourceConfig = setting(SourceConfig(format="prompt"), "prompts for collection and RL")
    eval_prompts: SourceConfig = setting(
        SourceConfig(format="prompt"), "held-out prompts for best-of-n and evaluation"
    )
    preferences: SourceConfig = setting(
        SourceConfig(format="preference"), "prompt/chosen/rejected pairs; null = the collect artifact"
    )
    max_length: int = setting(128, "longest training sequence in tokens (prompt + response)", gt=1)
    max_prompt_length: int = setting(
        48,
        "longest prompt in tokens; every stage keeps the last max_prompt_length tokens of a longer one",
        gt=0,
    )
    val_size: int = setting(512, "rows held out for validation", ge=1)
    on_bad_row: str = setting("error", "what to do with a malformed row", choices=["error", "skip"])
    num_workers: int = setting(0, "DataLoader worker processes", ge=0)


# ---------------------------------------------------------------------------------------- peft
@dataclass
class PeftConfig:
    method: str = setting("none", "parameter-efficient fine-tuning method", choices=["none", "lora"])
    r: int = setting(16, "LoRA rank", gt=0)
    alpha: float = setting(32.0, "LoRA scaling numerator (scale = alpha / r)", gt=0)
    dropout: float = setting(0.0, "dropout on the LoRA input", ge=0, lt=1)
    target_modules: list[str] = setting(
        ["all-linear"], "module names to adapt, or ['all-linear'] for every linear layer but the head"
    )
    save: str = setting("merged", "export merged weights or the adapter alone", choices=["merged", "adapter"])


# --------------------------------------------------------------------------------------- repro
@dataclass
class ReproConfig:
    mode: str = setting(
        "native",
        "arithmetic: native = the fastest kernels this CPU offers (numbers differ across machines); "
        "portable = every CPU-dependent code path pinned (rlhf_lab/repro.py), the same numbers on any "
        "x86-64 machine, CPU only; select it as `repro=portable`, which also keeps its world and "
        "artifacts apart (paths.root/portable)",
        choices=["native", "portable"],
    )


# ------------------------------------------------------------------------------------- trainer
@dataclass
class TrainerConfig:
    _target_: str = "lightning.pytorch.Trainer"
    accelerator: str = setting("cpu", "cpu, gpu, auto, ...")
    devices: Any = setting(1, "number of devices or a list of ids")
    num_nodes: int = setting(1, "machines", gt=0)
    strategy: str = setting("auto", "Lightning strategy: auto, ddp, fsdp, deepspeed_stage_2, ...")
    precision: str = setting("32-true", "Lightning precision: 32-true, bf16-mixed, 16-mixed, bf16-true")
    log_every_n_steps: int = setting(10, "how often training metrics are logged", gt=0)
    enable_progress_bar: bool = setting(True, "show the rich progress bar")
    deterministic: bool = setting(False, "ask torch for deterministic kernels")


# -------------------------------------------------------------------------------------- logger
@dataclass
class WandbConfig:
    enabled: bool = setting(True, "log to Weights & Biases")
    offline: bool = setting(True, "write runs locally (sync later with `wandb sync`); false = online")
    project: str = setting("rlhf_lab", "W&B project")
    entity: str | None = setting(None, "W&B team or user")
    group: str | None = setting(None, "W&B group; null = the experiment name")
    tags: list[str] = setting([], "extra W&B tags")


@dataclass
class LoggerConfig:
    wandb: WandbConfig = setting(WandbConfig(), "Weights & Biases logging")
    sample_table_every: int = setting(1, "log a table of samples every N validations", gt=0)
