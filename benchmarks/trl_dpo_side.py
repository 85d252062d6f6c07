"""TRL's side of `benchmarks/dpo_step.py`: time DPO training steps of TRL's DPOTrainer.

Runs inside the environment that `dpo_step.py` creates (benchmarks/.venv-trl-latest, the latest TRL), so
it imports neither rlhf_lab nor Lightning nor Hydra; it reads only plain files (an HF model folder, a
JSONL of {"prompt", "chosen", "rejected"}).

    benchmarks/.venv-trl-latest/bin/python benchmarks/trl_dpo_side.py --policy SFT_DIR --pairs pairs.jsonl \
        --steps 14 --warmup 2 --batch-size 32 --max-length 128 --beta 0.1 --lr 1e-6 --out trl.json

The reference log-probs are precomputed once before training (`precompute_ref_log_probs=True`), as
rlhf_lab computes them, so a step is the policy's forward and backward passes and the update on both
sides. Writes {"step_seconds", "tokens_per_step", "rss_at_start_mb", "peak_rss_mb", "trl_version",
...}: the wall time of each training step (collation, forward, backward, optimizer), the real
(unpadded) tokens of each step's chosen and rejected sequences, and this process's resident memory
when training began and at its peak.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
from pathlib import Path

import torch
import trl
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl_side import StepTimer, common_args  # the RL benchmark's TRL side, in the same environment


def read_pairs(path: str) -> list[dict]:
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows]


def dpo_config(args, out_dir: str) -> trl.DPOConfig:
    """The benchmark's settings as TRL's config: the RL benchmark's TrainingArguments (CPU, fp32, AdamW
    with rlhf_lab's betas, the same warm-up, no logging, evaluation or saving), then DPO's own."""
    return trl.DPOConfig(
        **common_args(out_dir, args.lr)
        | {
            "per_device_train_batch_size": args.batch_size,
            "max_steps": args.steps,
            "max_length": args.max_length,
            "beta": args.beta,
            "loss_type": ["sigmoid"],
            "precompute_ref_log_probs": True,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", required=True, help="HF folder of the starting policy (and tokenizer)")
    parser.add_argument("--pairs", required=True, help='JSONL of {"prompt", "chosen", "rejected"}')
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--batch-size", type=int, required=True, help="pairs per step")
    parser.add_argument("--max-length", type=int, required=True, help="longest prompt + completion")
    parser.add_argument("--beta", type=float, required=True)
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    tokens_per_step: list[int] = []

    class CountingDPOTrainer(trl.DPOTrainer):
        def training_step(self, model, inputs, *rest, **kwargs):
            tokens_per_step.append(int(inputs["attention_mask"].sum()))  # chosen and rejected, unpadded
            return super().training_step(model, inputs, *rest, **kwargs)

    timer = StepTimer()
    with tempfile.TemporaryDirectory(prefix="trl_dpo_side_") as out_dir:
        config = dpo_config(args, out_dir)
        tokenizer = AutoTokenizer.from_pretrained(args.policy)
        model = AutoModelForCausalLM.from_pretrained(args.policy, dtype=torch.float32)
        trainer = CountingDPOTrainer(
            model=model,
            args=config,
            train_dataset=Dataset.from_list(read_pairs(args.pairs)),
            processing_class=tokenizer,
            callbacks=[timer],
        )
        trainer.train()
    result = {
        "step_seconds": timer.seconds,
        "tokens_per_step": tokens_per_step,
        "rss_at_start_mb": timer.rss_at_start_mb,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "trl_version": trl.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, list)}))


if __name__ == "__main__":
    main()
