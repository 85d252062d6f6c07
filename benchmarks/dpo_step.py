"""DPO step throughput: rlhf_lab's `stage=dpo` against TRL's DPOTrainer (the latest release), on the
tiny world's SFT policy and collected preference pairs.

    python benchmarks/dpo_step.py                           # 2 rounds of 14 steps a side
    RLHF_LAB_HOME=/tmp/lab python benchmarks/dpo_step.py --steps 8 --warmup 2 --rounds 1
    python benchmarks/dpo_step.py --threads 1               # one core a side

Both sides run the same settings, each in its own process: the same model folder and the same pairs
(the first pairs of the world's collect artifact, as prompt/chosen/rejected strings), 32 pairs per
step, sequences of at most 128 tokens (prompt + completion), β 0.1, the sigmoid (DPO) loss, AdamW with
the same betas, learning rate (`--lr`), warmup and clipping, fp32 on CPU with torch's default threads,
no logging service. Each side computes the reference's log-probs of every pair once before training
(TRL: `precompute_ref_log_probs=True`), so a step is the policy's forward and backward passes over the
batch's chosen and rejected sequences and the update. rlhf_lab runs with its defaults otherwise
(chosen and rejected packed end to end without padding, micro-batches of `dpo.micro_batch_tokens`),
TRL with its defaults (one padded batch of chosen and rejected).

The sides alternate (`--rounds` runs each: rlhf_lab, TRL, rlhf_lab, TRL, ...). Prints, for each side,
the median seconds per step over every run's steps after its first `--warmup`, pairs and real
(unpadded) tokens per second, the peak resident memory of the process, its resident memory when
training began and the difference, then the ratios rlhf_lab / TRL; writes it all to
benchmarks/results/dpo_step.json. The environments are `rl_step.py`'s: benchmarks/.venv-rlhf_lab
(torch 2.13.0 and `pip install -e .`) and, for TRL, benchmarks/.venv-trl-latest (torch 2.13.0, the latest
TRL `rl_step.TRL_LATEST` and vaderSentiment, which this side does not import), created on the first run.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import rl_step  # noqa: E402  (the environments, the measured child process, the thread setting)

RESULTS = HERE / "results" / "dpo_step.json"
BATCH_PAIRS, MAX_LENGTH, BETA = 32, 128, 0.1


def tiny_world_inputs(home: Path) -> dict[str, Path]:
    """The default config's SFT policy and collected pairs, built below `home` if missing."""
    os.environ["RLHF_LAB_HOME"] = str(home)
    from rlhf_lab.api import compose
    from rlhf_lab.pipeline import ensure

    cfg = compose("logger=csv", "trainer.enable_progress_bar=false")
    run_dir = Path(cfg.paths.runs) / "benchmark_dpo_step"
    run_dir.mkdir(parents=True, exist_ok=True)
    return {"policy": ensure(cfg, "sft", run_dir), "collect": ensure(cfg, "collect", run_dir)}


def write_pairs(collect: Path, count: int, path: Path) -> Path:
    """The first `count` collected pairs as plain prompt/chosen/rejected rows (both sides read them)."""
    with open(collect / "preferences.jsonl") as f:
        rows = [json.loads(line) for _, line in zip(range(count), f, strict=False)]
    path.write_text(
        "".join(json.dumps({k: r[k] for k in ("prompt", "chosen", "rejected")}) + "\n" for r in rows)
    )
    return path


def trl_python() -> Path:
    """The latest TRL's environment, shared with `rl_step.py --algos grpo` (benchmarks/.venv-trl-latest)."""
    return rl_step.trl_python(rl_step.TRL_LATEST)


def rlhf_lab_side(inputs: dict, args, workdir: Path, env: dict) -> dict:
    overrides = [
        "stage=dpo",
        f"dpo.policy={inputs['policy']}",
        f"data.preferences.path={inputs['pairs']}",
        "data.val_size=1",  # one prompt's pairs held out: the step-0 and final evaluations stay tiny
        f"data.max_length={MAX_LENGTH}",
        f"dpo.batch_size={BATCH_PAIRS}",
        f"dpo.beta={BETA}",
        "dpo.loss=dpo",
        f"dpo.lr={args.lr}",
        "dpo.warmup_steps=5",
        "dpo.schedule=constant",
        f"dpo.max_steps={args.steps}",
        "dpo.eval_every=100000",
        "dpo.eval_prompts=8",
        "dpo.sampling.max_new_tokens=8",
        "dpo.checkpoint_every=100000",
        "logger=csv",
        "trainer.enable_progress_bar=false",
        "cache=false",
        f"hydra.run.dir={workdir / 'run'}",
        f"paths.artifacts={workdir / 'artifacts'}",
    ]
    command = [str(rl_step.lab_python()), "-m", "rlhf_lab.cli", *overrides]
    peak = rl_step.run_measured(command, workdir, "rlhf_lab_dpo", env)
    with open(workdir / "run" / "dpo" / "csv" / "metrics.csv") as f:
        rows = sorted(
            (r for r in csv.DictReader(f) if r.get("dpo/train/time/step")), key=lambda r: int(r["step"])
        )
    return {
        "step_seconds": [float(r["dpo/train/time/step"]) for r in rows],
        "tokens_per_step": [float(r["dpo/train/tokens_per_step"]) for r in rows],
        "peak_rss_mb": peak,
        "rss_at_start_mb": float(rows[0]["dpo/train/memory/at_start_mb"]),
    }


def trl_side(inputs: dict, args, workdir: Path, env: dict) -> dict:
    out = workdir / "trl_dpo.json"
    command = [
        str(trl_python()),
        str(HERE / "trl_dpo_side.py"),
        f"--policy={inputs['policy']}",
        f"--pairs={inputs['pairs']}",
        f"--steps={args.steps}",
        f"--batch-size={BATCH_PAIRS}",
        f"--max-length={MAX_LENGTH}",
        f"--beta={BETA}",
        f"--lr={args.lr}",
        f"--out={out}",
    ]
    peak = rl_step.run_measured(command, workdir, "trl_dpo", env)
    return json.loads(out.read_text()) | {"peak_rss_mb": peak}


def summarize(runs: list[dict], warmup: int) -> dict:
    """A side's runs pooled: the median step time after each run's first `warmup` steps, pairs and
    unpadded tokens per second at that median, and memory (the largest peak; what training added)."""
    seconds, tokens = [], []
    for run in runs:
        if len(run["step_seconds"]) <= warmup:
            raise SystemExit(f"measured {len(run['step_seconds'])} steps; need more than --warmup={warmup}")
        seconds += run["step_seconds"][warmup:]
        tokens += run["tokens_per_step"][warmup : len(run["step_seconds"])]
    median = statistics.median(seconds)
    return {
        "median_step_s": median,
        "pairs_per_s": BATCH_PAIRS / median,
        "tokens_per_s": statistics.fmean(tokens) / median,
        "mean_tokens_per_step": statistics.fmean(tokens),
        "steps_measured": len(seconds),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "rss_at_start_mb": max(r["rss_at_start_mb"] for r in runs),
        "training_mb": max(r["peak_rss_mb"] - r["rss_at_start_mb"] for r in runs),
        "rounds": runs,
    }


def print_table(ours: dict, trl: dict, ratio: dict, args, trl_version: str) -> None:
    threads = args.threads or rl_step.torch_threads()
    print(
        f"\n{BATCH_PAIRS} pairs/step, <= {MAX_LENGTH} tokens, beta {BETA}, median of {args.rounds} x "
        f"{args.steps - args.warmup} steps after {args.warmup} warmup each; CPU, {threads} threads"
    )
    columns = ("s/step", "pairs/s", "tok/s", "tok/step", "peak MB", "start MB", "train MB")
    print(f"{'side':10s} " + " ".join(f"{c:>9s}" for c in columns))
    for side, r in (("rlhf_lab", ours), (f"TRL {trl_version}", trl)):
        cells = (r["median_step_s"], r["pairs_per_s"], r["tokens_per_s"], r["mean_tokens_per_step"])
        memory = (r["peak_rss_mb"], r["rss_at_start_mb"], r["training_mb"])
        print(
            f"{side:10s} {cells[0]:9.3f} {cells[1]:9.1f} "
            + " ".join(f"{x:9.0f}" for x in (*cells[2:], *memory))
        )
    print(
        f"rlhf_lab/TRL: throughput {ratio['throughput']:.2f}x, peak memory {ratio['peak_memory']:.2f}x, "
        f"training memory {ratio['training_memory']:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=14, help="DPO steps per run, warmup included")
    parser.add_argument("--warmup", type=int, default=2, help="first steps of a run left out of the median")
    parser.add_argument("--rounds", type=int, default=2, help="runs per side, alternating (default 2)")
    parser.add_argument("--home", default=os.environ.get("RLHF_LAB_HOME", "lab"), help="rlhf_lab home")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads of both sides (default: torch's)"
    )
    parser.add_argument("--lr", type=float, default=1e-6, help="learning rate of both sides")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results JSON")
    args = parser.parse_args()
    if args.steps <= args.warmup:
        parser.error("--steps must exceed --warmup")

    trl_python(), rl_step.lab_python()  # create the environments first: a failure costs no training
    inputs = tiny_world_inputs(Path(args.home).resolve())
    env = rl_step.child_env(args)
    runs: dict[str, list[dict]] = {"rlhf_lab": [], "trl": []}
    with tempfile.TemporaryDirectory(prefix="dpo_step_") as tmp:
        inputs["pairs"] = write_pairs(
            inputs["collect"], args.steps * BATCH_PAIRS + 16, Path(tmp) / "pairs.jsonl"
        )
        for round_ in range(1, args.rounds + 1):  # alternate the sides: drifts of a shared machine even out
            for side, run_side in (("rlhf_lab", rlhf_lab_side), ("trl", trl_side)):
                print(f"dpo: {side}, round {round_}/{args.rounds}, {args.steps} steps ...", flush=True)
                with tempfile.TemporaryDirectory(prefix=f"dpo_step_{side}_", dir=tmp) as workdir:
                    runs[side].append(run_side(inputs, args, Path(workdir), env))
    ours, trl = summarize(runs["rlhf_lab"], args.warmup), summarize(runs["trl"], args.warmup)
    ratio = {
        "throughput": trl["median_step_s"] / ours["median_step_s"],
        "peak_memory": ours["peak_rss_mb"] / trl["peak_rss_mb"],
        "training_memory": ours["training_mb"] / trl["training_mb"],
    }
    print_table(ours, trl, ratio, args, runs["trl"][0]["trl_version"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "settings": {
            "steps": args.steps,
            "warmup": args.warmup,
            "rounds": args.rounds,
            "pairs_per_step": BATCH_PAIRS,
            "max_length": MAX_LENGTH,
            "beta": BETA,
            "lr": args.lr,
            "threads": args.threads or rl_step.torch_threads(),
            "trl": runs["trl"][0]["trl_version"],
        },
        "inputs": {k: str(v) for k, v in inputs.items() if k != "pairs"},
        "machine": rl_step.machine(),
        "results": {"rlhf_lab": ours, "trl": trl, "ratio": ratio},
    }
    args.out.write_text(json.dumps(record, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
