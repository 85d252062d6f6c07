"""The settings of the DPO stage: the preference loss and its β, offline or online rounds, the judge."""

from __future__ import annotations

from dataclasses import dataclass

from rlhf_lab.config.fields import default_of, setting
from rlhf_lab.config.rl import RLConfig
from rlhf_lab.config.stages import SamplingConfig, TrainConfig

DPO_LOSSES = ["dpo", "cdpo", "ipo", "simpo"]


@dataclass
class DPOConfig(TrainConfig):
    policy: str | None = setting(
        None, "policy folder to start from, also the reference (dpo, cdpo, ipo); null = the sft artifact"
    )
    loss: str = setting(
        "dpo",
        "dpo (Rafailov 2023), cdpo (conservative DPO: labels flipped with probability epsilon, Mitchell "
        "2023), ipo (Azar 2023) or simpo (length-normalized, no reference model; Meng 2024)",
        choices=DPO_LOSSES,
    )
    beta: float | None = setting(
        None,
        "beta of dpo and cdpo, tau of ipo, the reward scale of simpo; null = the loss's paper value: "
        "0.1 (dpo, cdpo, ipo), 2.0 (simpo)",
        gt=0,
    )
    epsilon: float = setting(0.1, "cdpo: the probability that a label is flipped", ge=0, lt=0.5)
    gamma_ratio: float = setting(0.5, "simpo: the target margin gamma as a multiple of beta", ge=0)
    lr: float = default_of(TrainConfig, "lr", 3e-4)
    max_steps: int = default_of(TrainConfig, "max_steps", 150)
    warmup_steps: int = default_of(TrainConfig, "warmup_steps", 20)
    batch_size: int = setting(32, "preference pairs per optimizer step", gt=0)
    rounds: int = setting(
        1,
        "1: offline, on the preference pairs (data.preferences, or the collect artifact); R >= 2: online "
        "DPO (Guo 2024; Xiong 2024): collect's budget (collect.num_prompts x collect.samples_per_prompt, "
        "its pairs and sampling) split over R rounds, each sampled from the current policy, labeled by "
        "dpo.judge and trained on for max_steps / R steps",
        gt=0,
    )
    judge: str = setting(
        "labeler",
        "online: who labels each round's pairs: labeler (the labeler group: simulated from gold, or a "
        "file of human labels) or rm (the objective's reward model; the higher score wins)",
        choices=["labeler", "rm"],
    )
    proxy: bool = setting(
        False,
        "score held-out samples with the objective too (objective=rm then builds the reward stage "
        "first); without it, an objective that needs no reward stage is still reported",
    )
    sampling: SamplingConfig = setting(SamplingConfig(), "how held-out evaluation samples are drawn")
    micro_batch_tokens: int = setting(
        4096,
        "most prompt + completion tokens in one forward pass (chosen and rejected packed without "
        "padding; a tiny-world step of 32 pairs is about 2,100); the micro-batches' gradients add up to "
        "the step's; lower it on a small GPU; 0 = a whole step at once",
        ge=0,
    )
    eval_every: int = setting(
        50, "every N steps (and at the end): held-out pairs, and held-out samples as RL evaluates", gt=0
    )
    eval_prompts: int = default_of(RLConfig, "eval_prompts", 256)
    checkpoint_every: int = setting(50, "save a resumable checkpoint every N steps (and at round ends)", gt=0)
    seed: int | None = setting(
        None,
        "seed of the pair split and order, the online rounds' samples and held-out samples; null = `seed`",
    )

    def resolved_beta(self) -> float:
        """dpo.beta, or the loss's paper value when it is null."""
        return self.beta if self.beta is not None else (2.0 if self.loss == "simpo" else 0.1)
