"""The speed cost of portable arithmetic (rlhf_lab/repro.py): the same work in each mode, alternated.

    python benchmarks/repro_cost.py                  # 3 rounds of native, portable
    python benchmarks/repro_cost.py --rounds 5 --skip-pipeline

Two measurements, each process in one mode, the modes alternating (native, portable, native, ...) so that
a drift in a shared machine's speed reaches both:
- step: the tiny world's default model (a 4-layer Llama, width 192, 2048 tokens) in one process: the
  fastest of `--reps` training steps (forward, backward, AdamW on 32 sequences of 128 tokens) and of as
  many rollouts (32 completions of 48 sampled tokens with the KV cache), after one warmup;
- pipeline: `benchmarks/rl_fingerprint.py --only ppo` in a fresh lab (world, pretraining, SFT,
  collection, reward model and 3 PPO steps at the fingerprint's small sizes), its wall time.
Prints each mode's fastest time over all rounds (on a shared machine the least disturbed one; medians
are in the JSON too) and the ratio portable / native; writes benchmarks/results/repro_cost.json.
Both modes run 2 threads on a 2-core machine; on more cores native uses them all, portable keeps 2.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "repro_cost.json"


def step_times(reps: int) -> dict[str, float]:
    """The fastest training step and rollout of the default tiny Llama in this process, in seconds."""
    import torch
    from transformers import LlamaForCausalLM

    from rlhf_lab.config import TinyModelConfig
    from rlhf_lab.world.model import llama_config

    config = llama_config(TinyModelConfig(), 2048, pad_token_id=0, eos_token_id=1)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = torch.randint(2, 2048, (32, 128))
    prompts = torch.randint(2, 2048, (32, 16))

    def train() -> None:
        model.train()
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    def rollout() -> None:
        model.eval()
        with torch.no_grad():
            model.generate(prompts, do_sample=True, max_new_tokens=48, min_new_tokens=48, top_k=0)

    return {"train_step": fastest(train, reps), "rollout": fastest(rollout, reps)}


def fastest(work, reps: int) -> float:
    work()  # warmup
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def pipeline_seconds(mode: str) -> float:
    """Wall seconds of the PPO fingerprint run (every stage, in a fresh lab) in `mode`."""
    with tempfile.TemporaryDirectory() as home:
        start = time.perf_counter()
        command = [sys.executable, str(HERE / "rl_fingerprint.py"), "--repro", mode, "--only", "ppo"]
        subprocess.run(
            [*command, "--home", home, "--out", f"{home}/fp.json"], check=True, capture_output=True
        )
        return time.perf_counter() - start


def in_mode(mode: str, reps: int) -> dict[str, float]:
    """step_times in a fresh process pinned to `mode`."""
    code = f"from rlhf_lab.repro import pin; pin({mode!r}); import json, repro_cost; "
    code += f"print(json.dumps(repro_cost.step_times({reps})))"
    done = subprocess.run([sys.executable, "-c", code], cwd=HERE, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions of a step within a process")
    parser.add_argument("--skip-pipeline", action="store_true")
    args = parser.parse_args()
    samples: dict[str, dict[str, list[float]]] = {"native": {}, "portable": {}}
    for round_ in range(args.rounds):
        for mode in samples:
            measured = in_mode(mode, args.reps)
            if not args.skip_pipeline:
                measured["pipeline"] = pipeline_seconds(mode)
            for name, seconds in measured.items():
                samples[mode].setdefault(name, []).append(seconds)
            print(
                f"round {round_} {mode:8s}",
                "  ".join(f"{k} {v:.3f}s" for k, v in measured.items()),
                flush=True,
            )
    best = {mode: {k: min(v) for k, v in by.items()} for mode, by in samples.items()}
    medians = {mode: {k: statistics.median(v) for k, v in by.items()} for mode, by in samples.items()}
    ratios = {k: best["portable"][k] / best["native"][k] for k in best["native"]}
    median_ratios = {k: medians["portable"][k] / medians["native"][k] for k in medians["native"]}
    print("portable / native:", "  ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
    record = {"command": " ".join(sys.argv), "samples": samples, "fastest": best, "ratios": ratios}
    record |= {"medians": medians, "median_ratios": median_ratios}
    RESULTS.write_text(json.dumps(record | {"machine": machine()}, indent=1) + "\n")


def machine() -> dict:
    from rlhf_lab.repro import cpu_model

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "load_average": os.getloadavg()}


if __name__ == "__main__":
    main()
