"""Fingerprints of short RL runs, one per algorithm: a checksum of the final weights and of eval.jsonl.

A refactor that should not change what RL computes is checked by running this before and after it
(same machine, same threads) and comparing the two JSON files:

    python benchmarks/rl_fingerprint.py --out before.json                   # on the old commit
    python benchmarks/rl_fingerprint.py --out after.json --against before.json   # on the new one

`--against` prints, per run, whether the weights and the evaluations are bitwise equal, and exits 1
if any differs. benchmarks/results/rl_fingerprint_555dd98.json holds the runs of commit 555dd98 (CPU,
2 threads), before the RL stage became a package; benchmarks/results/rl_fingerprint_8a719d5.json those
of commit 8a719d5, before issue 17 (the policy-gradient family). The 555dd98 runs no longer match
8a719d5 itself: its step-0 evaluation already differs, the world's default gold and reward model having
changed between them.

Native fingerprints hold on the machine that made them. `--repro portable` runs in portable arithmetic
(rlhf_lab/repro.py, docs/reproducibility.md), whose fingerprints hold on any x86-64 CPU: the file
rl_fingerprint_portable_<commit>.json in benchmarks/results/ is checked by tests/test_repro.py, on every
machine that runs the slow tests. After a change that changes RL's numbers, regenerate it at the new
commit (and delete the old one, named in tests/test_repro.py's COMMITTED):

    python benchmarks/rl_fingerprint.py --repro portable \
        --out benchmarks/results/rl_fingerprint_portable_$(git rev-parse --short HEAD).json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
from pathlib import Path

from rlhf_lab.repro import MODES, pin

# A small world, short trainings and a small reward model: frozen with the recorded fingerprints (it
# predates conf/debug/fast.yaml, which sets a few more fields), so that later runs compare with them.
FAST = """
    world.n_documents=3000 world.vocab_size=512 world.eval_prompts=64 world.model.hidden_size=64
    world.model.num_layers=2 world.model.intermediate_size=128 data.max_length=64 data.max_prompt_length=24
    data.val_size=64 pretrain.max_steps=40 pretrain.batch_size=16 pretrain.val_every=20
    pretrain.val_batches=2 pretrain.warmup_steps=5 sft.max_steps=20 sft.batch_size=8 sft.val_every=10
    sft.val_batches=2 sft.warmup_steps=2 trainer.enable_progress_bar=false logger=csv
    collect.num_prompts=48 collect.samples_per_prompt=3 collect.chunk=16 collect.sampling.max_new_tokens=16
    labeler.temperature=0.2 reward_model.max_steps=12 reward_model.val_every=6 reward_model.batch_size=8
""".split()
RL = """
    stage=rl rl.max_steps=3 rl.rollouts_per_step=8 rl.sampling.max_new_tokens=12 rl.eval_prompts=8
    rl.eval_every=3 rl.lr=1e-3 rl.warmup_steps=0 rl.micro_batch_tokens=128
""".split()
RUNS = {
    "ppo": ["algo=ppo"],
    "ppo-critic": ["algo=ppo", "algo.value.model=critic"],
    "reinforce": ["algo=reinforce"],
    "rloo": ["algo=rloo"],
    "grpo": ["algo=grpo"],
    "rloo-lora": ["algo=rloo", "peft=lora"],
}


def tensors_sha(folder: Path) -> str:
    """sha256 over every tensor of every safetensors file in `folder` (names sorted)."""
    from safetensors.torch import load_file

    digest = hashlib.sha256()
    for file in sorted(folder.rglob("*.safetensors")):
        tensors = load_file(file)
        for name in sorted(tensors):
            digest.update(f"{file.relative_to(folder)}:{name}".encode())
            digest.update(tensors[name].contiguous().view(-1).view(dtype=__import__("torch").uint8).numpy())
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True)
    parser.add_argument("--home", default=None, help="RLHF_LAB_HOME (default: a fresh temporary folder)")
    parser.add_argument("--only", nargs="*", default=list(RUNS))
    parser.add_argument("--against", default=None, help="a fingerprint JSON to compare with")
    parser.add_argument("--repro", choices=MODES, default="native", help="the arithmetic (rlhf_lab/repro.py)")
    args = parser.parse_args()
    os.environ["RLHF_LAB_HOME"] = args.home or tempfile.mkdtemp(prefix="fingerprint-")
    os.environ.setdefault("WANDB_MODE", "offline")
    pin(args.repro)  # before torch computes anything
    import torch

    torch.set_num_threads(2)  # portable mode's own count; native fingerprints were made with it
    from rlhf_lab import api

    result = {}
    for name in args.only:
        cfg = api.compose(*FAST, *RL, *RUNS[name], f"repro={args.repro}")
        record = api.run(cfg)
        out = Path(record["artifacts"]["rl"])
        result[name] = {
            "weights": tensors_sha(out),
            "eval": hashlib.sha256((out / "eval.jsonl").read_bytes()).hexdigest(),
            "eval_rows": [json.loads(line) for line in (out / "eval.jsonl").read_text().splitlines()],
        }
        print(name, result[name]["weights"][:16], result[name]["eval"][:16], flush=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    if args.against:
        raise SystemExit(compare(json.loads(Path(args.against).read_text()), result))


def compare(before: dict, after: dict) -> int:
    """Print per run whether the weights and the evaluations are bitwise equal; 1 if any run differs.
    Evaluations compare every number that `before` holds: a metric added to eval.jsonl since is no
    difference."""
    differs = 0
    for name in after:
        old = before.get(name, {})
        same = {
            "weights": old.get("weights") == after[name]["weights"],
            "eval": same_rows(old.get("eval_rows", []), after[name]["eval_rows"]),
        }
        differs |= not all(same.values())
        verdict = {k: "equal" if v else "DIFFER" for k, v in same.items()}
        print(f"{name:12s} weights {verdict['weights']}  eval {verdict['eval']}")
    return int(differs)


def same_rows(old: list[dict], new: list[dict]) -> bool:
    """Whether `new` has `old`'s rows, each with `old`'s values under `old`'s keys."""
    return len(old) == len(new) and all({k: b.get(k) for k in a} == a for a, b in zip(old, new, strict=True))


if __name__ == "__main__":
    main()
