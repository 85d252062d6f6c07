"""TRL's side of `benchmarks/rl_step.py`: time RL training steps of TRL's RLOOTrainer, PPOTrainer or
GRPOTrainer.

Runs inside a TRL environment that `rl_step.py` creates (benchmarks/.venv-trl: TRL 0.29 for RLOO and
PPO; benchmarks/.venv-trl-latest: the latest TRL for GRPO), so it imports
neither rlhf_lab nor Lightning nor Hydra; it reads only plain files (an HF model folder, a JSONL of
{"prompt": ...}).

    benchmarks/.venv-trl/bin/python benchmarks/trl_side.py --algo rloo --policy SFT_DIR \
        --prompts prompts.jsonl --steps 12 --warmup 2 --out rloo.json
    benchmarks/.venv-trl/bin/python benchmarks/trl_side.py --algo ppo --policy SFT_DIR \
        --reward-model RM_DIR --prompts prompts.jsonl --steps 12 --warmup 2 --out ppo.json

Writes {"median_step_s", "completion_tokens_per_s", "peak_rss_mb", "rss_at_start_mb", "steps",
"trl_version", ...}: the median wall time of a training step (generation, scoring, update) after the
first `--warmup` steps, the mean completion tokens of those steps (up to and including EOS) over that
median, the peak resident memory of this process and its resident memory when training began.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch
import trl
from datasets import Dataset
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    TrainerCallback,
)

# The settings both sides share (rl_step.py passes the same ones to rlhf_lab).
ROLLOUTS_PER_STEP = 32  # completions per step
RLOO_K = 4  # completions per prompt for RLOO and GRPO: 8 prompts x 4
MAX_NEW_TOKENS = 48
TEMPERATURE = 1.0
BETA = 0.05
WARMUP_LR_STEPS = 5  # rlhf_lab's rl.warmup_steps default, then a constant learning rate
BETAS = (0.9, 0.95)  # rlhf_lab's AdamW betas


class StepTimer(TrainerCallback):
    """Wall time of each training step. RLOO (a transformers Trainer) calls on_step_begin and
    on_step_end around a step; TRL's PPOTrainer has its own loop that calls only on_train_begin and
    on_step_end, so there a step is the time from the previous step's end (or the start)."""

    def __init__(self):
        self.seconds: list[float] = []
        self._start: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.rss_at_start_mb = current_rss_mb()  # models and trainer built, no step run yet
        self._start = time.perf_counter()

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        self.seconds.append(now - self._start)
        self._start = now


def vader_reward():
    """RLOO and GRPO reward function: the VADER compound score of each completion (rlhf_lab's gold=vader)."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()

    def vader(prompts, completions, **kwargs) -> list[float]:
        return [analyzer.polarity_scores(text)["compound"] for text in completions]

    return vader


def read_prompts(path: str) -> list[str]:
    with open(path) as f:
        return [json.loads(line)["prompt"] for line in f if line.strip()]


def common_args(out_dir: str, lr: float) -> dict:
    """TrainingArguments shared by both trainers: CPU, fp32, no logging, evaluation or saving."""
    return dict(
        output_dir=out_dir,
        use_cpu=True,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        per_device_train_batch_size=ROLLOUTS_PER_STEP,
        gradient_accumulation_steps=1,
        learning_rate=lr,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=WARMUP_LR_STEPS,
        optim="adamw_torch",  # torch.optim.AdamW, as rlhf_lab
        adam_beta1=BETAS[0],
        adam_beta2=BETAS[1],
        weight_decay=0.0,
        max_grad_norm=1.0,
        report_to="none",
        logging_strategy="no",
        save_strategy="no",
        eval_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
    )


def train_on_prompts(trainer_class, config, args, timer: StepTimer) -> None:
    """Train the policy of args.policy with a TRL trainer of the GRPO kind (RLOO, GRPO) on the prompts of
    args.prompts, rewarded by VADER."""
    tokenizer = AutoTokenizer.from_pretrained(args.policy, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(args.policy, dtype=torch.float32)
    trainer = trainer_class(
        model=model,
        reward_funcs=vader_reward(),
        args=config,
        train_dataset=Dataset.from_list([{"prompt": p} for p in read_prompts(args.prompts)]),
        processing_class=tokenizer,
        callbacks=[timer],
    )
    trainer.train()


def run_rloo(args, timer: StepTimer, out_dir: str) -> list[int]:
    """Train args.steps RLOO steps; returns the completion tokens generated at each step."""
    tokens_per_step: list[int] = []

    class CountingRLOOTrainer(trl.RLOOTrainer):
        def _generate(self, prompts):
            prompt_ids, completion_ids, completions = super()._generate(prompts)
            # completion_ids are already cut after the first EOS (EOS included)
            tokens_per_step.append(sum(len(ids) for ids in completion_ids))
            return prompt_ids, completion_ids, completions

    config = trl.RLOOConfig(
        **common_args(out_dir, args.lr),
        max_steps=args.steps,
        num_generations=RLOO_K,
        max_completion_length=MAX_NEW_TOKENS,
        temperature=TEMPERATURE,
        top_p=1.0,
        top_k=0,
        beta=BETA,
        num_iterations=1,
        log_completions=False,
    )
    train_on_prompts(CountingRLOOTrainer, config, args, timer)
    return tokens_per_step


def run_grpo(args, timer: StepTimer, out_dir: str) -> list[int]:
    """Train args.steps GRPO steps (rlhf_lab's algo=grpo: advantages scaled by the group's std, the clipped
    ratio per token, k3 in the loss, a mean over sequences of token means); returns the completion tokens
    generated at each step."""
    tokens_per_step: list[int] = []

    class CountingGRPOTrainer(trl.GRPOTrainer):
        def _generate(self, prompts):
            out = super()._generate(prompts)  # (prompt_ids, completion_ids, ...): cut after the first EOS
            tokens_per_step.append(sum(len(ids) for ids in out[1]))
            return out

    config = trl.GRPOConfig(
        **common_args(out_dir, args.lr),
        max_steps=args.steps,
        num_generations=RLOO_K,
        max_completion_length=MAX_NEW_TOKENS,
        temperature=TEMPERATURE,
        top_p=1.0,
        top_k=0,
        beta=BETA,  # a reference model and k3 in the loss
        epsilon=0.2,
        num_iterations=1,
        loss_type="grpo",  # TRL 1.x defaults to "dapo" (a token mean)
        scale_rewards="group",
        disable_dropout=True,
        log_completions=False,
    )
    train_on_prompts(CountingGRPOTrainer, config, args, timer)
    return tokens_per_step


def run_ppo(args, timer: StepTimer, out_dir: str) -> list[int]:
    """Train args.steps PPO steps; returns the completion tokens generated at each step."""
    from trl.experimental.ppo import PPOConfig, PPOTrainer
    from trl.experimental.ppo import ppo_trainer as ppo_module

    if args.reward_model is None:
        raise SystemExit("--algo ppo needs --reward-model")
    tokenizer = AutoTokenizer.from_pretrained(args.policy, padding_side="left")
    tokens_per_step: list[int] = []
    generate_batch = ppo_module.batch_generation

    def counting_batch_generation(model, queries, *rest, **kwargs):
        query_responses, logits = generate_batch(model, queries, *rest, **kwargs)
        tokens_per_step.append(completion_tokens(query_responses[:, queries.shape[1] :], tokenizer))
        return query_responses, logits

    ppo_module.batch_generation = counting_batch_generation  # PPOTrainer.train looks it up per step

    config = PPOConfig(
        **common_args(out_dir, args.lr),
        total_episodes=args.steps * ROLLOUTS_PER_STEP,
        num_mini_batches=1,
        num_ppo_epochs=1,
        local_rollout_forward_batch_size=ROLLOUTS_PER_STEP,
        response_length=MAX_NEW_TOKENS,
        temperature=TEMPERATURE,
        kl_coef=BETA,
        stop_token="eos",
        num_sample_generations=0,
    )
    prompts = read_prompts(args.prompts)
    encoded = Dataset.from_list([{"input_ids": tokenizer(p)["input_ids"]} for p in prompts])
    policy = AutoModelForCausalLM.from_pretrained(args.policy, dtype=torch.float32)
    ref_policy = AutoModelForCausalLM.from_pretrained(args.policy, dtype=torch.float32)
    reward_model = AutoModelForSequenceClassification.from_pretrained(args.reward_model, num_labels=1)
    value_model = AutoModelForSequenceClassification.from_pretrained(args.reward_model, num_labels=1)
    trainer = PPOTrainer(
        args=config,
        processing_class=tokenizer,
        model=policy,
        ref_model=ref_policy,
        reward_model=reward_model,
        value_model=value_model,
        train_dataset=encoded,
        eval_dataset=encoded.select(range(ROLLOUTS_PER_STEP)),
        callbacks=[timer],
    )
    trainer.train()
    return tokens_per_step


def current_rss_mb() -> float:
    """This process's resident memory now (VmRSS), in MiB."""
    status = Path("/proc/self/status").read_text().splitlines()
    return int(next(line for line in status if line.startswith("VmRSS:")).split()[1]) / 1024


def completion_tokens(responses: torch.Tensor, tokenizer) -> int:
    """Real tokens of responses (B, T): up to and including the first EOS; all T without one
    (generation stops early only once every row has ended, so a row without EOS is full)."""
    is_eos = responses == tokenizer.eos_token_id
    lengths = torch.where(is_eos.any(1), is_eos.int().argmax(1) + 1, responses.shape[1])
    return int(lengths.sum())


def summarize(seconds: list[float], tokens: list[int], warmup: int) -> dict:
    if len(seconds) <= warmup or len(tokens) < len(seconds):
        raise SystemExit(f"measured {len(seconds)} steps and {len(tokens)} generations; need > {warmup}")
    kept_seconds, kept_tokens = seconds[warmup:], tokens[warmup : len(seconds)]
    median = statistics.median(kept_seconds)
    mean_tokens = statistics.fmean(kept_tokens)
    return {
        "median_step_s": median,
        "completion_tokens_per_s": mean_tokens / median,
        "mean_completion_tokens": mean_tokens,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "steps": len(kept_seconds),
        "step_seconds": seconds,
        "tokens_per_step": tokens,
        "trl_version": trl.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algo", choices=["rloo", "ppo", "grpo"], required=True)
    parser.add_argument("--policy", required=True, help="HF folder of the starting policy (and tokenizer)")
    parser.add_argument("--reward-model", help="HF folder of the reward model (ppo; also the value model)")
    parser.add_argument("--prompts", required=True, help='JSONL with one {"prompt": ...} a line')
    parser.add_argument("--steps", type=int, default=12, help="training steps, warmup included")
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out of the median")
    parser.add_argument("--lr", type=float, required=True, help="peak learning rate")
    parser.add_argument("--out", required=True, help="JSON file for the results")
    args = parser.parse_args()

    timer = StepTimer()
    with tempfile.TemporaryDirectory(prefix="trl_side_") as out_dir:
        run = {"rloo": run_rloo, "ppo": run_ppo, "grpo": run_grpo}[args.algo]
        tokens = run(args, timer, out_dir)
    result = {
        "algo": args.algo,
        **summarize(timer.seconds, tokens, args.warmup),
        "rss_at_start_mb": timer.rss_at_start_mb,
    }
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, list)}))


if __name__ == "__main__":
    main()
