"""The settings of each stage: training (pretrain, sft, reward), collect and its labeler, the objective,
best-of-n, RL (the algorithm, its KL and value function) and eval."""

from __future__ import annotations

from dataclasses import dataclass

from rlhf_lab.config.fields import default_of, setting
from rlhf_lab.config.sections import PeftConfig


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
    seed: int | None = setting(None, "seed of the sampling and of the labeler's draws; null = `seed`")


@dataclass
class AnnotatorConfig:
    """One simulated annotator of `labeler=pool` (AlpacaFarm, Dubois 2023): P(a>b) =
    sigmoid((g_a-g_b)/(temperature_scale*T) + length_bonus*(words_a-words_b)), then flipped with
    probability `flip`."""

    name: str = setting("annotator", "recorded in the `annotator` column of the pairs it labels")
    temperature_scale: float = setting(
        1.0,
        "its Bradley-Terry temperature as a multiple of the pool's T (labeler.temperature or ceiling)",
        gt=0,
    )
    length_bonus: float = setting(
        0.0, "log-odds added per word the completion is longer than the other (a length bias; < 0: shorter)"
    )
    flip: float = setting(0.0, "probability that its label is flipped (a careless click)", ge=0, le=1)
    weight: float = setting(1.0, "its share of the pairs, relative to the other annotators' weights", gt=0)


@dataclass
class LabelerConfig:
    kind: str = setting(
        "bt",
        "who prefers: bt, argmax, flip, pool (a pool of simulated annotators) or a file of human labels",
        choices=["bt", "argmax", "flip", "pool", "file"],
    )
    temperature: float | None = setting(
        None,
        "Bradley-Terry temperature T in P(a>b) = sigmoid((g_a-g_b)/T) (pool: the annotators' base T)",
        gt=0,
    )
    ceiling: float | None = setting(
        0.8,
        "with temperature null: choose T so that the best achievable "
        "accuracy E[sigmoid(|g_a-g_b|/T)] equals this (bt; pool: the base T of its annotators)",
        gt=0.5,
        lt=1,
    )
    epsilon: float = setting(0.1, "flip: probability that a label is flipped", ge=0, le=1)
    path: str | None = setting(None, "file: CSV/JSONL/Parquet of prompt, completion_a, completion_b, choice")
    annotators: list[AnnotatorConfig] = setting(
        [],
        "pool: the simulated annotators; each pair is labeled by one, drawn by weight "
        "(conf/labeler/pool.yaml)",
    )
    length_bonus: float = setting(
        0.0,
        "bt, argmax, flip, pool: a length preference (Singhal 2023), in gold units per word: each "
        "completion's utility is gold + length_bonus*words, in place of its gold (< 0: shorter; file: 0)",
    )


@dataclass
class RewardModelConfig(TrainConfig):
    backbone: str = setting(
        "policy",
        "what the reward model starts from: policy (the policy's sft or pretrain artifact, as `init` "
        "says), a size of the tiny world's model (a key of world.sizes: that size pretrained on the "
        "world's corpus, cached per size), or an HF causal LM (a folder or hub id, its own tokenizer)",
    )
    init: str = setting(
        "sft",
        "with backbone=policy: initialize from the policy's sft or pretrain artifact",
        choices=["sft", "pretrain"],
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
    seed: int | None = setting(
        None, "seed of the data split and shuffling and of the initial head; null = `seed`"
    )


@dataclass
class ScorerConfig:
    kind: str = setting(
        "rm",
        "what RL and best-of-n maximize: rm (a reward model), ensemble (several, combined), gold, "
        "noisy_gold (the gold plus a fixed error over words), length or keyword",
        choices=["rm", "ensemble", "gold", "noisy_gold", "length", "keyword"],
    )
    path: str | None = setting(None, "rm: reward-model folder; null = the reward artifact")
    keywords: list[str] = setting([], "keyword: words that each add 1 to the score")
    batch_size: int = setting(256, "texts scored together", gt=0)
    members: list[str] = setting([], "ensemble: reward-model folders (or hub ids), each a member")
    seeds: list[int] = setting(
        [], "ensemble: a member per seed s, this run's reward artifact with reward_model.seed=s (built first)"
    )
    combine: str = setting(
        "mean",
        "ensemble: how the members' normalized scores make one (Coste 2023): mean; min, the worst case "
        "(WCO); uwo, the mean less uwo_lambda times their variance (uncertainty-weighted, UWO)",
        choices=["mean", "min", "uwo"],
    )
    uwo_lambda: float = setting(0.5, "ensemble, combine=uwo: the weight λ of the members' variance", ge=0)
    error: str = setting(
        "gaussian",
        "noisy_gold: the law of each word's error weight, both at variance 1 (Kwa 2024): gaussian "
        "(light-tailed) or student_t (heavy-tailed, `df` degrees of freedom)",
        choices=["gaussian", "student_t"],
    )
    df: float = setting(
        3.0, "noisy_gold, error=student_t: degrees of freedom (> 2: the variance exists)", gt=2
    )
    sigma: float = setting(
        0.5, "noisy_gold: the error's standard deviation on a text of distinct words, in gold units", ge=0
    )
    seed: int = setting(
        0, "noisy_gold: which draw of the word weights (not an ensemble's `seeds`; independent of `seed`)"
    )


@dataclass
class BonConfig:
    n: list[int] = setting(
        [1, 2, 4, 8, 16, 32, 64],
        "the n of best-of-n; max(n) completions are sampled per prompt once, and every n reads them",
    )
    num_prompts: int = setting(128, "held-out prompts (data.eval_prompts in order, cycled if shorter)", gt=0)
    policy: str | None = default_of(CollectConfig, "policy", None)
    sampling: SamplingConfig = setting(SamplingConfig(), "how candidates are sampled")
    seed: int | None = setting(None, "seed of the candidates' sampling; null = `seed`")


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


# ----------------------------------------------------------------------------------------- dpo
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


@dataclass
class EvalConfig:
    num_prompts: int = default_of(BonConfig, "num_prompts", 256)
    sampling: SamplingConfig = setting(SamplingConfig(), "how the SFT and RL policies are sampled")
    policies: list[str] = setting(
        ["rl"], "the trained policies compared with SFT: rl and/or dpo (their stages are built first)"
    )
    proxy: bool = setting(
        True, "score every policy with the objective (objective=rm builds the reward stage); false: no proxy"
    )
    bon: bool = setting(True, "add the best-of-n artifact's rows (its own prompts and n) to the summary")
    ppl_rows: int = setting(512, "held-out SFT pairs on which each policy's perplexity is measured", gt=0)
    judged: str | None = setting(
        None,
        "a label file of blind comparisons judged by people (label.judge; label.judge_labels): the summary "
        "adds each one's human win rate of A over B with its 95% interval, beside the gold's and the "
        "proxy's on the same prompts; keyed by the file's content",
    )
