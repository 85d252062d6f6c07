"""The settings of each stage: training (pretrain, sft, reward), collect and its labeler, the objective,
best-of-n and eval; RL's (the algorithm, its KL, value function and off-policy corrections) are in
`config/rl.py`, DPO's in `config/dpo.py`."""

from __future__ import annotations

from dataclasses import dataclass

from rlhf_lab.config.fields import default_of, setting


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


# ---------------------------------------------------------------------------------------- eval
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
