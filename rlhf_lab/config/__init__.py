"""Typed configuration schema, registered in Hydra's ConfigStore (`fields`, `sections`, `stages`,
`schema`; checked by `validation`).

The YAML files in `conf/` fill these dataclasses, so an unknown key or a value of the wrong type
fails when Hydra composes the config, naming the key. Ranges and choices are declared next to each
field (`setting(..., gt=0)`) and checked by `validate` before any model is built. Each field is
documented and given its default once, here: a subclass that only changes a default reuses the
parent's help (`default_of`), and a YAML option file states only what differs from these defaults,
besides the kind it selects (`algo.name`, `labeler.kind`, `objective.kind`, `peft.method`), so that
choosing an option selects it whatever the default.
"""

from rlhf_lab.config.dpo import (
    DPOConfig,
)
from rlhf_lab.config.fields import ConfigError, default_of, setting
from rlhf_lab.config.label import LabelConfig
from rlhf_lab.config.rl import (
    AlgoConfig,
    KLConfig,
    OffPolicyConfig,
    RLConfig,
    ValueConfig,
)
from rlhf_lab.config.schema import STAGES, Config, register_configs
from rlhf_lab.config.sections import (
    DataConfig,
    LoggerConfig,
    ModelConfig,
    PathsConfig,
    PeftConfig,
    SourceConfig,
    TinyModelConfig,
    TrainerConfig,
    WandbConfig,
    WorldConfig,
)
from rlhf_lab.config.stages import (
    AnnotatorConfig,
    BonConfig,
    CollectConfig,
    EvalConfig,
    LabelerConfig,
    LMTrainConfig,
    PretrainConfig,
    RewardModelConfig,
    SamplingConfig,
    ScorerConfig,
    SFTConfig,
    TrainConfig,
)
from rlhf_lab.config.validation import ALLOWED_TARGETS, RENAMED, allowed_targets, upgrade_overrides, validate

__all__ = [
    "ALLOWED_TARGETS",
    "RENAMED",
    "STAGES",
    "AlgoConfig",
    "AnnotatorConfig",
    "BonConfig",
    "CollectConfig",
    "DPOConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "KLConfig",
    "LMTrainConfig",
    "LabelConfig",
    "LabelerConfig",
    "LoggerConfig",
    "ModelConfig",
    "OffPolicyConfig",
    "PathsConfig",
    "PeftConfig",
    "PretrainConfig",
    "RLConfig",
    "RewardModelConfig",
    "SFTConfig",
    "SamplingConfig",
    "ScorerConfig",
    "SourceConfig",
    "TinyModelConfig",
    "TrainConfig",
    "TrainerConfig",
    "ValueConfig",
    "WandbConfig",
    "WorldConfig",
    "allowed_targets",
    "default_of",
    "register_configs",
    "setting",
    "upgrade_overrides",
    "validate",
]
