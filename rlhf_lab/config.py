"""Typed configuration schema, registered in Hydra's ConfigStore.

The YAML files in `conf/` fill these dataclasses, so an unknown key or a value of the wrong type
fails when Hydra composes the config, naming the key. Ranges and choices are declared next to each
field (`setting(..., gt=0)`) and checked by `validate` before any model is built. Each field is
documented and given its default once, here: a subclass that only changes a default reuses the
parent's help (`default_of`), and a YAML option file states only what differs from these defaults,
besides the kind it selects (`algo.name`, `labeler.kind`, `objective.kind`, `peft.method`), so that
choosing an option selects it whatever the default.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from rlhf_lab.errors import UserError

# Hydra instantiates `_target_` callables; only these module prefixes may be named, so a config file
# from someone else cannot run arbitrary code. Extend it from the environment, which a config file
# cannot change: RLHF_LAB_ALLOWED_TARGETS="mypackage.,other.module.".
ALLOWED_TARGETS = ("rlhf_lab.", "lightning.", "torch.optim.")

# Renamed keys, old name → new name. The old name keeps working for now in command-line overrides
# (`rlhf-lab`, `api.compose`), with a message naming the new one; config files use the new names.
RENAMED = {
    "reward": "objective",
    "algo.k": "algo.samples_per_prompt",
    "collect.k": "collect.samples_per_prompt",
}
# An override: an optional prefix (+ add, ++ force-add, ~ delete), a key (a field path or a group),
# an optional @package, and an optional `=value` (a value, or a sweep `a,b`).
_OVERRIDE = re.compile(r"(?P<prefix>~|\+\+|\+)?(?P<key>[\w./-]+)(?P<rest>@.*|=.*)?", re.DOTALL)

log = logging.getLogger(__name__)


class ConfigError(UserError, ValueError):
    """A configuration value is out of range or inconsistent; the message names every bad key."""


def setting(default: Any, help: str, *, gt=None, ge=None, lt=None, le=None, choices=None):
    """A documented dataclass field with an optional range (`gt`, `ge`, `lt`, `le`) or `choices`."""
    meta = dict(help=help, gt=gt, ge=ge, lt=lt, le=le, choices=choices)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    if dataclasses.is_dataclass(default):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


def default_of(owner: type, name: str, default: Any):
    """The field `name` of the dataclass `owner` (its help, range and choices) with another default:
    a subclass that only changes a parent's default writes `lr: float = default_of(TrainConfig, "lr",
    3e-3)`, so each help text is written once."""
    (declared,) = [f for f in dataclasses.fields(owner) if f.name == name]
    return setting(default, **declared.metadata)


# --------------------------------------------------------------------------------------- world
@dataclass
class TinyModelConfig:
    hidden_size: int = setting(192, "width of the tiny Llama", gt=0)
    num_layers: int = setting(4, "transformer blocks", gt=0)
    num_heads: int = setting(4, "attention heads", gt=0)
    num_kv_heads: int = setting(2, "key/value heads (grouped-query attention)", gt=0)
    intermediate_size: int = setting(512, "MLP width", gt=0)
    max_position_embeddings: int = setting(256, "longest sequence the model accepts", gt=0)


@dataclass
class WorldConfig:
    seed: int = setting(0, "seed of the corpus generator, the tokenizer data and the initial weights")
    n_documents: int = setting(40_000, "review documents generated", ge=100)
    vocab_size: int = setting(2048, "byte-level BPE vocabulary size", ge=300)
    sft_fraction: float = setting(0.2, "share of documents turned into SFT pairs", gt=0, lt=1)
    prompt_fraction: float = setting(0.1, "share of documents whose openings are prompts", gt=0, lt=1)
    eval_prompts: int = setting(512, "held-out prompts for evaluation", ge=1)
    model: TinyModelConfig = setting(TinyModelConfig(), "architecture of the tiny Llama")


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
        "row format",
        choices=["auto", "text", "prompt_completion", "messages", "prompt", "preference"],
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
    max_prompt_length: int = setting(48, "longest prompt in tokens; longer prompts are bad rows", gt=0)
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


# ---------------------------------------------------------------------------------- LM training
@dataclass
class TrainConfig:
    """Optimization of a training stage."""

    lr: float = setting(3e-4, "peak AdamW learning rate", gt=0)
    weight_decay: float = setting(0.0, "AdamW weight decay", ge=0)
    betas: list[float] = setting([0.9, 0.95], "AdamW betas")
    warmup_steps: int = setting(50, "linear warmup steps", ge=0)
    schedule: str = setting("cosine", "decay after warmup", choices=["cosine", "linear", "constant"])
    min_lr_ratio: float = setting(0.1, "final lr as a fraction of the peak", ge=0, le=1)
    max_steps: int = setting(500, "optimizer steps", gt=0)
    batch_size: int = setting(32, "sequences per device and step", gt=0)
    accumulate_grad_batches: int = setting(1, "micro-batches per optimizer step", gt=0)
    grad_clip: float = setting(1.0, "gradient-norm clipping; 0 = off", ge=0)
    val_every: int = setting(100, "validate every N optimizer steps", gt=0)
    val_batches: int = setting(8, "validation batches per validation", gt=0)
    max_nonfinite: int = setting(
        5, "a non-finite loss or gradient skips its update; this many in a row: checkpoint and stop", gt=0
    )


@dataclass
class LMTrainConfig(TrainConfig):
    """A causal-LM stage (pretrain, sft): optimization plus sample generations at each validation."""

    samples: int = setting(8, "sample generations logged at each validation", ge=0)
    sample_tokens: int = setting(48, "new tokens per sample generation", gt=0)
    sample_temperature: float = setting(1.0, "temperature of sample generations", ge=0)


@dataclass
class PretrainConfig(LMTrainConfig):
    lr: float = default_of(TrainConfig, "lr", 3e-3)
    weight_decay: float = default_of(TrainConfig, "weight_decay", 0.1)
    max_steps: int = default_of(TrainConfig, "max_steps", 300)
    warmup_steps: int = default_of(TrainConfig, "warmup_steps", 30)
    val_every: int = default_of(TrainConfig, "val_every", 150)
    batch_size: int = setting(16, "packed blocks of data.max_length tokens per step", gt=0)
    gold_samples: int = setting(256, "continuations scored with the gold scorer after training", ge=0)


@dataclass
class SFTConfig(LMTrainConfig):
    lr: float = default_of(TrainConfig, "lr", 5e-4)
    max_steps: int = default_of(TrainConfig, "max_steps", 200)
    warmup_steps: int = default_of(TrainConfig, "warmup_steps", 20)


# ------------------------------------------------------------------------------ preferences
@dataclass
class SamplingConfig:
    max_new_tokens: int = setting(48, "longest completion in tokens", gt=0)
    temperature: float = setting(1.0, "sampling temperature; 0 = greedy", ge=0)
    top_k: int = setting(0, "keep the k most likely tokens; 0 = off", ge=0)
    top_p: float = setting(1.0, "nucleus sampling mass; 1 = off", gt=0, le=1)
    batch_size: int = setting(256, "sequences generated together", gt=0)


@dataclass
class CollectConfig:
    policy: str | None = setting(None, "policy folder that samples; null = the sft artifact")
    samples_per_prompt: int = setting(4, "completions sampled per prompt (K)", ge=2)
    pairs: str = setting("all", "all K(K-1)/2 pairs of a prompt, or adjacent", choices=["all", "adjacent"])
    num_prompts: int = setting(
        2000, "prompts to sample from (data.prompts in order, cycled if shorter)", gt=0
    )
    chunk: int = setting(250, "prompts per resumable chunk", gt=0)
    sampling: SamplingConfig = setting(SamplingConfig(), "how completions are sampled")


@dataclass
class LabelerConfig:
    kind: str = setting(
        "bt",
        "who prefers: bt, argmax, flip or a file of human labels",
        choices=["bt", "argmax", "flip", "file"],
    )
    temperature: float | None = setting(
        None, "Bradley-Terry temperature T in P(a>b) = sigmoid((g_a-g_b)/T)", gt=0
    )
    ceiling: float | None = setting(
        0.8,
        "with temperature null: choose T so that the best achievable "
        "accuracy E[sigmoid(|g_a-g_b|/T)] equals this",
        gt=0.5,
        lt=1,
    )
    epsilon: float = setting(0.1, "flip: probability that a label is flipped", ge=0, le=1)
    path: str | None = setting(None, "file: CSV/JSONL/Parquet of prompt, completion_a, completion_b, choice")


@dataclass
class RewardModelConfig(TrainConfig):
    init: str = setting(
        "sft", "initialize the backbone from the sft or the pretrain artifact", choices=["sft", "pretrain"]
    )
    lr: float = default_of(TrainConfig, "lr", 1e-3)
    max_steps: int = default_of(TrainConfig, "max_steps", 300)
    warmup_steps: int = default_of(TrainConfig, "warmup_steps", 20)
    batch_size: int = setting(16, "prompts per step; each brings all its ranked completions", gt=0)
    val_batches: int = default_of(TrainConfig, "val_batches", 1000)
    pool: str = setting(
        "last",
        "how the scalar head reads a text: last (at the final token, HF's read-out) or sum (applied to "
        "every completion token and summed, a per-token reward; the exported folder then needs "
        "rlhf_lab's scorer, which reads `reward_pool` from its config)",
        choices=["last", "sum"],
    )
    use_margin: bool = setting(False, "subtract the row's `margin` inside the Bradley-Terry loss")
    normalize: bool = setting(True, "shift and scale rewards so the policy's samples have mean 0, std 1")
    dropout: float = setting(
        0.0,
        "dropout while training only, on attention probabilities and on each decoder layer's attention "
        "and MLP outputs (the residual branches); off in validation and in the exported model",
        ge=0,
        lt=1,
    )
    ema_decay: float | None = setting(
        None,
        "decay of an exponential moving average of the weights (e.g. 0.99), started at the end of "
        "warmup; validated and exported in place of the raw weights; null = off",
        ge=0,
        lt=1,
    )


@dataclass
class ScorerConfig:
    kind: str = setting(
        "rm",
        "what RL and best-of-n maximize: rm (a reward model), gold, length or keyword",
        choices=["rm", "gold", "length", "keyword"],
    )
    path: str | None = setting(None, "rm: reward-model folder; null = the reward artifact")
    keywords: list[str] = setting([], "keyword: words that each add 1 to the score")
    batch_size: int = setting(256, "texts scored together", gt=0)


@dataclass
class BonConfig:
    n: list[int] = setting(
        [1, 2, 4, 8, 16, 32, 64],
        "the n of best-of-n; max(n) completions are sampled per prompt once, and every n reads them",
    )
    num_prompts: int = setting(128, "held-out prompts (data.eval_prompts in order, cycled if shorter)", gt=0)
    policy: str | None = default_of(CollectConfig, "policy", None)
    sampling: SamplingConfig = setting(SamplingConfig(), "how candidates are sampled")


# ------------------------------------------------------------------------------------------ rl
@dataclass
class KLConfig:
    beta: float = setting(0.05, "KL coefficient β (the initial one when adaptive)", ge=0)
    estimator: str = setting(
        "k1", "per-token estimator of log π/π_ref (Schulman 2020)", choices=["k1", "k2", "k3"]
    )
    placement: str = setting(
        "reward",
        "reward: −β·kl on each token's reward (Ziegler 2019); loss: β·k3 in the loss (GRPO, Shao 2024)",
        choices=["reward", "loss"],
    )
    adaptive: bool = setting(False, "adapt β toward `target` (Ziegler 2019)")
    target: float = setting(6.0, "adaptive: target KL per sequence in nats", gt=0)
    horizon: int = setting(10_000, "adaptive: horizon in samples", gt=0)


@dataclass
class ValueConfig:
    model: str = setting(
        "head",
        "head: a linear head on the policy's backbone; critic: a separate model initialized from "
        "the reward model (Stiennon 2020; Huang 2024); none: no value function",
        choices=["head", "critic", "none"],
    )
    coef: float = setting(0.1, "weight of the value loss", ge=0)
    clip: float | None = setting(0.2, "value clipping range around the old values; null = off", gt=0)
    gamma: float = setting(1.0, "discount γ of GAE", ge=0, le=1)
    lam: float = setting(0.95, "λ of GAE (Schulman 2016)", ge=0, le=1)


@dataclass
class AlgoConfig:
    name: str = setting("ppo", "the policy-gradient algorithm", choices=["ppo", "reinforce", "rloo", "grpo"])
    samples_per_prompt: int = setting(
        1, "completions sampled per prompt (a group; rloo and grpo need 2 or more)", gt=0
    )
    epochs: int = setting(1, "passes over each batch of rollouts", gt=0)
    minibatches: int = setting(1, "optimizer steps per epoch (the rollouts split evenly)", gt=0)
    clip: float = setting(0.2, "ppo/grpo: ratio clipping range ε (Schulman 2017)", gt=0)
    baseline: str = setting(
        "none",
        "reinforce: baseline subtracted from the return; moving_average of past mean returns",
        choices=["none", "moving_average"],
    )
    baseline_decay: float = setting(0.9, "reinforce: decay of the moving-average baseline", ge=0, lt=1)
    kl: KLConfig = setting(KLConfig(), "the KL penalty to the reference policy")
    value: ValueConfig = setting(ValueConfig(), "ppo: the value function")
    whiten_rewards: bool = setting(
        False, "scale token rewards to unit variance over the batch, mean kept (Huang 2024)"
    )
    whiten_advantages: bool = setting(True, "ppo: advantages to mean 0, std 1 over the batch (Huang 2024)")
    missing_eos_penalty: float | None = setting(
        None, "score given to a response that never ends (no EOS); null = off (Huang 2024: −1)"
    )
    stop_token: str | None = setting(
        None, "text of a token that ends a response like EOS (e.g. '.'); later tokens are masked"
    )
    reward_clip: float | None = setting(None, "clip scores to [−c, c]; null = off", gt=0)
    entropy_coef: float = setting(0.0, "entropy bonus weight in the loss", ge=0)
    scale_logprobs: bool = setting(
        True, "log-probs from logits / sampling temperature, as sampled (Huang 2024); false = T=1"
    )


@dataclass
class RLConfig(TrainConfig):
    policy: str | None = setting(None, "policy folder to start from; null = the sft artifact")
    # PPO's: several updates per batch want a low learning rate and few steps; the algo files of the
    # one-update algorithms (reinforce, rloo, grpo) set a higher rate and more, cheaper steps.
    lr: float = default_of(TrainConfig, "lr", 1e-4)
    max_steps: int = setting(20, "RL steps: rollout, score, update", gt=0)
    warmup_steps: int = default_of(TrainConfig, "warmup_steps", 5)
    schedule: str = default_of(TrainConfig, "schedule", "constant")
    rollouts_per_step: int = setting(
        64,
        "completions per RL step: rollouts_per_step / algo.samples_per_prompt prompts, each sampled "
        "algo.samples_per_prompt times",
        gt=0,
    )
    sampling: SamplingConfig = setting(SamplingConfig(), "how rollouts are sampled")
    micro_batch_tokens: int = setting(
        512,
        "most prompt + response tokens in one forward pass of the update (gradients of the micro-batches "
        "add up to the minibatch's: same update, less memory) and of the scoring passes before it; "
        "raise it on a GPU; 0 = a whole minibatch at once",
        ge=0,
    )
    eval_every: int = setting(10, "evaluate on held-out prompts every N steps (and at the end)", gt=0)
    eval_prompts: int = setting(256, "held-out prompts per evaluation", gt=0)
    samples_every: int = setting(10, "log a W&B table of rollouts every N steps", gt=0)
    checkpoint_every: int = setting(10, "save a resumable checkpoint every N steps", gt=0)


@dataclass
class EvalConfig:
    num_prompts: int = default_of(BonConfig, "num_prompts", 256)
    sampling: SamplingConfig = setting(SamplingConfig(), "how the SFT and RL policies are sampled")
    bon: bool = setting(True, "add the best-of-n artifact's rows (its own prompts and n) to the summary")
    ppl_rows: int = setting(512, "held-out SFT pairs on which each policy's perplexity is measured", gt=0)


# ---------------------------------------------------------------------------------------- root
STAGES = ["pretrain", "sft", "collect", "reward", "rl", "bon", "eval"]


@dataclass
class Config:
    stage: str = setting("pretrain", "the stage to run (set by the `stage` group)", choices=STAGES)
    pipeline: list[str] = setting(
        [], "stages run in order, each reusing or building its inputs (experiment files set it); [] = stage"
    )
    seed: int = setting(0, "seed of everything stochastic in the run")
    gold: str | None = setting(
        "vader", "gold scorer of the world (VADER sentiment); null = none", choices=["vader"]
    )
    cache: bool = setting(True, "reuse a stage's artifact when its config hash matches; false = rebuild")
    resume: str = setting(
        "auto",
        "auto: a stage that was interrupted resumes from the last checkpoint it left in its scratch "
        "folder (rerun the same command); never: it starts over",
        choices=["auto", "never"],
    )
    experiment: str | None = setting(None, "name of the experiment (W&B group); set by experiment files")
    world: WorldConfig = setting(WorldConfig(), "the tiny offline world")
    paths: PathsConfig = setting(PathsConfig(), "where things are written")
    model: ModelConfig = setting(ModelConfig(), "the starting model")
    data: DataConfig = setting(DataConfig(), "datasets and their validation")
    peft: PeftConfig = setting(PeftConfig(), "LoRA or full fine-tuning (sft and later stages)")
    trainer: TrainerConfig = setting(TrainerConfig(), "the Lightning Trainer")
    logger: LoggerConfig = setting(LoggerConfig(), "W&B and CSV logging")
    pretrain: PretrainConfig = setting(PretrainConfig(), "stage pretrain: the base LM on the corpus")
    sft: SFTConfig = setting(SFTConfig(), "stage sft: supervised fine-tuning on prompt/response pairs")
    collect: CollectConfig = setting(CollectConfig(), "stage collect: K samples a prompt, paired, labelled")
    labeler: LabelerConfig = setting(LabelerConfig(), "who labels the pairs of the collect stage")
    reward_model: RewardModelConfig = setting(
        RewardModelConfig(), "stage reward: a Bradley-Terry reward model on preference pairs"
    )
    objective: ScorerConfig = setting(
        ScorerConfig(), "the score that RL and best-of-n maximize (set by the `objective` group)"
    )
    algo: AlgoConfig = setting(AlgoConfig(), "the RL algorithm (set by the `algo` group)")
    rl: RLConfig = setting(RLConfig(), "stage rl: the policy against the reward with a KL penalty")
    bon: BonConfig = setting(BonConfig(), "stage bon: best-of-n reranking on held-out prompts")
    eval: EvalConfig = setting(EvalConfig(), "stage eval: SFT vs RL vs best-of-n on held-out prompts")


def upgrade_overrides(overrides: list[str]) -> list[str]:
    """`overrides` with each renamed key (RENAMED) spelled by its new name — `reward=gold`,
    `+reward.path=rm`, `~algo.k`, `algo.k=2,4` — and one message per renamed key used.
    Flags (`-m`, `--cfg job`) and values are left as they are."""
    upgraded, used = [], []
    for item in overrides:
        match = _OVERRIDE.fullmatch(item)
        if match and not item.startswith("-"):
            key = match["key"]
            for old, new in RENAMED.items():
                if key == old or key.startswith(old + "."):
                    item = f"{match['prefix'] or ''}{new}{key[len(old) :]}{match['rest'] or ''}"
                    if old not in used:
                        used.append(old)
                    break
        upgraded.append(item)
    for old in used:
        log.warning("'%s' is now '%s'; the old name works for now", old, RENAMED[old])
    return upgraded


def register_configs() -> None:
    """Put the schema in Hydra's ConfigStore; `conf/config.yaml` lists it first in its defaults."""
    ConfigStore.instance().store(name="rlhf_lab_schema", node=Config)


# ------------------------------------------------------------------------------------ validation
def _problems(node: Any, path: str):
    """Yield 'key: message' for every field of a dataclass tree outside its declared range."""
    for f in dataclasses.fields(node):
        value, key = getattr(node, f.name), f"{path}{f.name}"
        if dataclasses.is_dataclass(value):
            yield from _problems(value, key + ".")
            continue
        meta = f.metadata
        if value is None or not meta:
            continue
        if meta["choices"] is not None and value not in meta["choices"]:
            yield f"{key}: {value!r} is not one of {', '.join(map(str, meta['choices']))}"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, float) and not math.isfinite(value):
                yield f"{key}: must be finite, got {value}"
            for bound, ok, word in (
                ("gt", lambda v, b: v > b, ">"),
                ("ge", lambda v, b: v >= b, ">="),
                ("lt", lambda v, b: v < b, "<"),
                ("le", lambda v, b: v <= b, "<="),
            ):
                if meta[bound] is not None and not ok(value, meta[bound]):
                    yield f"{key}: must be {word} {meta[bound]}, got {value}"


def _cross_checks(cfg: Config):
    if cfg.world.model.num_heads % cfg.world.model.num_kv_heads:
        yield "world.model.num_kv_heads: must divide world.model.num_heads"
    if cfg.world.model.hidden_size % cfg.world.model.num_heads:
        yield "world.model.hidden_size: must be a multiple of world.model.num_heads"
    if cfg.data.max_prompt_length >= cfg.data.max_length:
        yield "data.max_prompt_length: must be < data.max_length (room is needed for the response)"
    if cfg.world.sft_fraction + cfg.world.prompt_fraction >= 1:
        yield "world.sft_fraction + world.prompt_fraction: must leave documents for pretraining"
    if cfg.model.name_or_path is None and cfg.data.max_length > cfg.world.model.max_position_embeddings:
        yield "data.max_length: exceeds world.model.max_position_embeddings"
    if cfg.labeler.kind == "file" and not cfg.labeler.path:
        yield "labeler.path: labeler=file needs the file of human labels"
    if cfg.labeler.kind == "bt" and cfg.labeler.temperature is None and cfg.labeler.ceiling is None:
        yield "labeler.temperature: labeler=bt needs a temperature or a ceiling"
    if cfg.labeler.kind != "file" and cfg.gold is None and cfg.stage == "collect":
        yield f"labeler.kind: labeler={cfg.labeler.kind} simulates labels from the gold score, but gold=null"
    if cfg.objective.kind == "gold" and cfg.gold is None:
        yield "objective.kind: objective=gold needs a gold scorer, but gold=null"
    if cfg.algo.name in ("rloo", "grpo") and cfg.algo.samples_per_prompt < 2:
        yield (
            f"algo.samples_per_prompt: algo={cfg.algo.name} compares the samples of a prompt: "
            f"needs 2 or more, got {cfg.algo.samples_per_prompt}"
        )
    if cfg.algo.name == "ppo" and cfg.algo.value.model == "none":
        yield "algo.value.model: algo=ppo needs a value function (head or critic)"
    if cfg.algo.value.model == "critic" and cfg.objective.kind != "rm":
        yield "algo.value.model: a critic is initialized from the reward model, but objective.kind is not rm"
    if cfg.stage == "rl" and cfg.rl.sampling.temperature == 0:
        yield "rl.sampling.temperature: RL needs sampled rollouts (> 0); greedy ones have no policy gradient"
    if cfg.rl.rollouts_per_step % cfg.algo.samples_per_prompt:
        yield "rl.rollouts_per_step: must be a multiple of algo.samples_per_prompt"
    if cfg.rl.rollouts_per_step % cfg.algo.minibatches:
        yield "algo.minibatches: must divide rl.rollouts_per_step"
    if cfg.algo.name in ("reinforce", "rloo") and cfg.algo.epochs * cfg.algo.minibatches > 1:
        yield (
            f"algo.epochs: algo={cfg.algo.name} is an on-policy estimator without an importance ratio, so it "
            "takes one update per batch (epochs=1, minibatches=1); use ppo or grpo for more"
        )
    runs_rl = cfg.stage in ("rl", "eval") or "rl" in cfg.pipeline
    if runs_rl and cfg.trainer.strategy.startswith(("fsdp", "deepspeed")):
        yield (
            f"trainer.strategy: {cfg.trainer.strategy} shards the policy, and generation under a sharding "
            "strategy is not supported yet; use trainer=ddp for RL (peft=lora for large models)"
        )
    unknown = [name for name in cfg.pipeline if name not in STAGES]
    if unknown:
        yield f"pipeline: unknown stages {unknown}; the stages are {', '.join(STAGES)}"
    if cfg.pipeline and cfg.pipeline[-1] != cfg.stage:
        yield f"pipeline: must end with the run's stage ({cfg.stage}), got {list(cfg.pipeline)}"
    if any(n < 1 for n in cfg.bon.n):
        yield f"bon.n: every n must be >= 1, got {list(cfg.bon.n)}"


def allowed_targets() -> tuple[str, ...]:
    extra = os.environ.get("RLHF_LAB_ALLOWED_TARGETS", "")
    return ALLOWED_TARGETS + tuple(p.strip() for p in extra.split(",") if p.strip())


def _unsafe_targets(node: Any, path: str = ""):
    """Yield 'key: message' for every `_target_` outside the allow-list, anywhere in a config tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "_target_" and not str(value).startswith(allowed_targets()):
                yield (
                    f"{path}{key}: {value!r} is not under an allowed module prefix "
                    f"({', '.join(allowed_targets())}); add yours to the environment variable "
                    "RLHF_LAB_ALLOWED_TARGETS if you trust it"
                )
            yield from _unsafe_targets(value, f"{path}{key}.")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _unsafe_targets(value, f"{path}{i}.")


def validate(cfg: DictConfig) -> Config:
    """Check `_target_`s, ranges, choices and cross-field rules; return the typed config or raise
    ConfigError naming every bad key."""
    unsafe = list(_unsafe_targets(OmegaConf.to_container(cfg, resolve=False)))
    if unsafe:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(unsafe))
    typed: Config = OmegaConf.to_object(cfg)
    problems = [*_problems(typed, ""), *_cross_checks(typed)]
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return typed
