"""The root of the schema, `Config`, and its registration in Hydra's ConfigStore."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from hydra.core.config_store import ConfigStore

from rlhf_lab.config.dpo import (
    DPOConfig,
)
from rlhf_lab.config.fields import ConfigError, setting
from rlhf_lab.config.label import LabelConfig
from rlhf_lab.config.rl import (
    AlgoConfig,
    RLConfig,
)
from rlhf_lab.config.sections import (
    DataConfig,
    LoggerConfig,
    ModelConfig,
    PathsConfig,
    PeftConfig,
    ReproConfig,
    TrainerConfig,
    WorldConfig,
)
from rlhf_lab.config.stages import (
    BonConfig,
    CollectConfig,
    EvalConfig,
    LabelerConfig,
    PretrainConfig,
    RewardModelConfig,
    ScorerConfig,
    SFTConfig,
)

STAGES = ["pretrain", "sft", "collect", "reward", "rl", "dpo", "bon", "eval", "label"]
GOLDS = ("careful", "reader", "vader")  # the tiny world's golds by name (rlhf_lab/world/gold.py)
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # owner/name, as the hub spells a repository


def gold_source(name: str) -> str:
    """What `gold` names: "world" (one of GOLDS), "folder" (a folder that exists, looked for first) or
    "hub" (a hub id, owner/name: a bare word is likelier a misspelt world gold). ConfigError for
    anything else."""
    if name in GOLDS:
        return "world"
    if Path(name).expanduser().is_dir():
        return "folder"
    if HUB_ID.fullmatch(name) and not name.startswith("."):
        return "hub"
    raise ConfigError(
        f"gold: {name!r} is neither a gold of the world ({', '.join(GOLDS)}), nor a reward-model folder "
        "that exists, nor a hub id (owner/name)"
    )


@dataclass
class Config:
    stage: str = setting("pretrain", "the stage to run (set by the `stage` group)", choices=STAGES)
    pipeline: list[str] = setting(
        [], "stages run in order, each reusing or building its inputs (experiment files set it); [] = stage"
    )
    seed: int = setting(
        0,
        "seed of every stage; collect.seed, reward_model.seed, rl.seed and bon.seed (null = this) give a "
        "stage its own, and a stage's cache key holds only its own seed",
    )
    gold: str | None = setting(
        "reader",
        "the gold reward (rlhf_lab/world/gold.py). Of the tiny world: reader = a careful reader's score, "
        "each flaw (a reused sentence frame, piled-up praise, a prompt ignored, broken grammar, "
        "non-words, a cut-off end) costing by degrees; careful = VADER sentiment of the completion when "
        "prompt + completion is a well-formed review of the world's grammar, else falling to -1; vader = "
        "VADER sentiment of the completion alone (word salad scores high). Or a reward model: a folder "
        "(a reward artifact, any HF sequence-classification folder) or a hub id owner/name. null = none",
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
    repro: ReproConfig = setting(ReproConfig(), "native or portable arithmetic (docs/reproducibility.md)")
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
    dpo: DPOConfig = setting(DPOConfig(), "stage dpo: the policy trained on preference pairs directly")
    bon: BonConfig = setting(BonConfig(), "stage bon: best-of-n reranking on held-out prompts")
    eval: EvalConfig = setting(EvalConfig(), "stage eval: SFT vs RL vs best-of-n on held-out prompts")
    label: LabelConfig = setting(LabelConfig(), "stage label: the labeling page for human pairwise labels")


def register_configs() -> None:
    """Put the schema in Hydra's ConfigStore; `conf/config.yaml` lists it first in its defaults."""
    ConfigStore.instance().store(name="rlhf_lab_schema", node=Config)
