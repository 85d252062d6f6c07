"""The settings of the RL stage: the algorithm (`algo`: its loss, KL, value function and off-policy
corrections) and the run (`rl`: steps, rollouts, sampling, staleness, evaluation)."""

from __future__ import annotations

from dataclasses import dataclass

from rlhf_lab.config.fields import default_of, setting
from rlhf_lab.config.sections import PeftConfig
from rlhf_lab.config.stages import SamplingConfig, TrainConfig


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
class OffPolicyConfig:
    correction: str = setting(
        "none",
        "weights for rollouts whose sampler is not the learner (a stale policy, rl.staleness, or another "
        "engine's arithmetic), w = π_old/π_sampler on each term's advantage: tis, min(w, cap) (truncated "
        "importance sampling, Yao 2025); mis, w inside [1/threshold, threshold] and 0 outside (masked, "
        "IcePop-style); none",
        choices=["none", "tis", "mis"],
    )
    level: str = setting(
        "token",
        "token: one weight per token; sequence: one per response, the product of its tokens' (gspo and "
        "gmpo, whose ratio is a sequence's, take only this)",
        choices=["token", "sequence"],
    )
    cap: float = setting(2.0, "tis: the cap C of the weights (Yao 2025: 2)", ge=1)
    threshold: float = setting(
        2.0, "mis: c, the weights kept within [1/c, c]; outside, the token or sequence is dropped", gt=1
    )


@dataclass
class AlgoConfig:
    name: str = setting("ppo", "the policy-gradient algorithm: an entry of rlhf_lab/stages/rl/algorithms.py")
    samples_per_prompt: int = setting(
        1, "completions sampled per prompt (a group; rloo and grpo need 2 or more)", gt=0
    )
    epochs: int = setting(1, "passes over each batch of rollouts", gt=0)
    minibatches: int = setting(1, "optimizer steps per epoch (the rollouts split evenly)", gt=0)
    clip: float = setting(
        0.2,
        "ratio clipping range ε (Schulman 2017) of every algorithm with a ratio; ε_low with clip_high; "
        "cispo: the range of its detached weight; gmpo: in log space, ratios within (e^−ε, e^ε_high)",
        gt=0,
    )
    clip_high: float | None = setting(
        None, "upper ratio clipping range ε_high (DAPO's clip-higher, Yu 2025); null = algo.clip", gt=0
    )
    baseline: str = setting(
        "none",
        "reinforce: baseline subtracted from the return; moving_average of past mean returns",
        choices=["none", "moving_average"],
    )
    baseline_decay: float = setting(0.9, "reinforce: decay of the moving-average baseline", ge=0, lt=1)
    tau_pos: float = setting(1.0, "sapo: temperature τ of the soft gate where the advantage is > 0", gt=0)
    tau_neg: float = setting(1.05, "sapo: temperature τ of the soft gate elsewhere (Qwen 2025: 1.05)", gt=0)
    off_policy: OffPolicyConfig = setting(
        OffPolicyConfig(), "corrections for a sampler that is not the learner (docs/stages.md)"
    )
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
    truncate_logprobs: bool = setting(
        True,
        "the log-probs of ratios and KL are those of the distribution that sampled: rl.sampling's top-k / "
        "top-p applied (the sampled token always kept) and renormalized, for the policy and the reference "
        "alike; false = the untruncated softmax (what TRL and OpenRLHF trainers compute). No effect "
        "without top-k / top-p",
    )
    dropout: float = setting(
        0.0,
        "dropout in the policy's forward passes of the update (attention probabilities and residual "
        "branches); sampling, old and reference log-probs stay without it. Huang 2024: off (0)",
        ge=0,
        lt=1,
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
    staleness: int = setting(
        0,
        "k: the rollouts of step t are sampled by the policy of step t − k (of step 0 for the first k), as "
        "in one-step-off (k = 1) and asynchronous trainers (Noukhovitch 2025); the schedule is exact and "
        "sequential, with no overlap of generation and training; 0 = on-policy",
        ge=0,
    )
    peft: PeftConfig = setting(
        PeftConfig(),
        "the RL policy's own adapter (rl.peft.method=lora, rl.peft.r=4, ...), so that the SFT policy and the "
        "reward model it starts from stay as the peft group trains them; method none = the peft group's",
    )
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
    seed: int | None = setting(
        None,
        "seed of the RL stage (prompt order, rollouts, value head, held-out samples) and of the eval "
        "stage, which draws the same held-out samples; null = `seed`",
    )
