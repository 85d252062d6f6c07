"""RL step throughput: rlhf_lab's `stage=rl` against TRL's RLOOTrainer and its last PPOTrainer
(`trl.experimental.ppo`, TRL 0.29), and its GRPOTrainer (the latest TRL release, 1.16), on the tiny
world's SFT policy, prompts and reward.

    python benchmarks/rl_step.py                             # rloo and ppo, 2 rounds of 12 steps a side
    python benchmarks/rl_step.py --algos grpo                # GRPO against TRL 1.16's GRPOTrainer
    RLHF_LAB_HOME=/tmp/lab python benchmarks/rl_step.py --algos rloo --steps 6 --warmup 1 --rounds 1
    python benchmarks/rl_step.py --threads 1                 # one core a side

Both sides run the same settings, each in its own process: 32 completions per step (RLOO, GRPO: 8
prompts x 4; PPO: 32 prompts x 1), up to 48 new tokens, temperature 1, β 0.05 (RLOO, PPO: KL in the
reward; GRPO: k3 in the loss, a mean over sequences of token means, TRL's loss_type="grpo", advantages
scaled by the group's std), one update epoch of one minibatch, CPU, fp32, torch's default threads
(every core), no logging service. RLOO and GRPO are rewarded by VADER's compound score (rlhf_lab:
gold=vader); PPO by the world's reward model, with a value model initialized from it. The learning
rate (`--lr`, default 1e-6) is the same on both sides and small, so that both policies stay at SFT and
sample completions of the same lengths: the two sides then do the same work per step (a step costs the
same at any learning rate; at 2e-4 the policies drift apart and so do their completion lengths).
rlhf_lab runs with its defaults otherwise (padding-free passes, micro-batches of
`rl.micro_batch_tokens`), TRL with one micro-batch of 32.

The sides alternate (`--rounds` runs each: rlhf_lab, TRL, rlhf_lab, TRL, ...), so that a drift in a
shared machine's speed reaches both. Prints, for each algorithm and side, the median seconds per step
over every run's steps after its first `--warmup`, completion tokens per second (mean completion
tokens per step over that median), the peak resident memory of the process, its resident memory when
training began (libraries and models loaded) and the difference (what training added), then the
ratios rlhf_lab / TRL; writes it all to benchmarks/results/rl_step.json (`--algos grpo`:
rl_step_grpo.json). Do not run anything else on the machine meanwhile: with every core in use, one more
busy thread slows a step several-fold.

The SFT policy and reward model come from rlhf_lab's pipeline (built once, then cached below the
lab's home: `--home`, else $RLHF_LAB_HOME, else ./lab). Each side runs in its own virtual environment
with the same torch, created on the first run: benchmarks/.venv-trl (torch 2.13.0, trl 0.29.0,
vaderSentiment; RLOO, PPO), benchmarks/.venv-trl-latest (torch 2.13.0, trl 1.16.0, vaderSentiment;
GRPO) and benchmarks/.venv-rlhf_lab (torch 2.13.0 and `pip install -e .`, no extras).
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LAB_VENV = HERE / ".venv-rlhf_lab"
RESULTS = HERE / "results" / "rl_step.json"
TORCH_VERSION = "2.13.0"  # the CPU build on disk; an unpinned torch would pull CUDA wheels
TRL_VERSION = "0.29.0"  # RLOO and PPO (its last PPOTrainer), as first measured
TRL_LATEST = "1.16.0"  # GRPO: the latest release when it was added (`pip index versions trl`)
VENVS = {TRL_VERSION: HERE / ".venv-trl", TRL_LATEST: HERE / ".venv-trl-latest"}
TRL_OF = {"rloo": TRL_VERSION, "ppo": TRL_VERSION, "grpo": TRL_LATEST}  # the TRL each algorithm runs on
ROLLOUTS_PER_STEP = 32

# rlhf_lab's command line for the settings above (the TRL side sets the same in trl_side.py).
SHARED_OVERRIDES = [
    "stage=rl",
    f"rl.rollouts_per_step={ROLLOUTS_PER_STEP}",
    "rl.sampling.max_new_tokens=48",
    "rl.sampling.temperature=1.0",
    "algo.kl.beta=0.05",
    "algo.epochs=1",
    "algo.minibatches=1",
    "logger=csv",
    "rl.eval_every=1000",
    "rl.eval_prompts=8",
    "rl.samples_every=1000",
    "rl.checkpoint_every=1000",
    "trainer.enable_progress_bar=false",
    "cache=false",
]
ALGO_OVERRIDES = {
    "rloo": ["algo=rloo", "algo.samples_per_prompt=4", "objective=gold", "gold=vader"],
    "grpo": ["algo=grpo", "algo.samples_per_prompt=4", "objective=gold", "gold=vader"],
    "ppo": ["algo=ppo", "algo.samples_per_prompt=1", "algo.value.model=critic", "objective=rm"],
}


# ------------------------------------------------------------------------------ inputs
def tiny_world_inputs(home: Path) -> dict[str, Path]:
    """The SFT policy, reward model and prompts of the default config's tiny world, built if missing."""
    os.environ["RLHF_LAB_HOME"] = str(home)  # paths.root of the composed config
    from rlhf_lab.api import compose
    from rlhf_lab.pipeline import ensure
    from rlhf_lab.world import build_world

    cfg = compose("logger=csv", "trainer.enable_progress_bar=false")
    run_dir = Path(cfg.paths.runs) / "benchmark_rl_step"
    run_dir.mkdir(parents=True, exist_ok=True)
    return {
        "policy": ensure(cfg, "sft", run_dir),
        "reward_model": ensure(cfg, "reward", run_dir),
        "prompts": build_world(cfg.world, cfg.paths.world).prompts,
    }


# ---------------------------------------------------------------------------- environments
def trl_python(version: str = TRL_VERSION) -> Path:
    """The interpreter of the environment of TRL `version`: trl and vaderSentiment over the pinned torch."""
    ready = functools.partial(_has_trl, version=version)
    return venv_python(VENVS[version], [f"trl=={version}", "vaderSentiment"], ready)


def lab_python() -> Path:
    """The interpreter of an environment with rlhf_lab's core install (`pip install -e .`: no optional
    extras) over the same torch as TRL's. Measured in environments of the same kind, the two sides'
    memory differs by what each framework loads, not by what else happens to be installed (e.g.
    scipy, pulled in by the sweep extra, which torchmetrics imports whenever it is present)."""
    return venv_python(LAB_VENV, ["-e", str(REPO)], _has_lab)


def machine() -> dict:
    """What a benchmark's results record of the machine it ran on."""
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}


def venv_python(folder: Path, packages: list[str], ready) -> Path:
    """The interpreter of the virtual environment `folder`, created on the first call: the pinned torch
    first (an unpinned one would pull CUDA wheels), then `packages`; `ready(python)` tells whether the
    environment holds the right versions."""
    python = folder / "bin" / "python"
    if python.exists() and ready(python):
        return python
    print(f"creating the environment {folder}", flush=True)
    _run([sys.executable, "-m", "venv", str(folder)])
    _run([str(python), "-m", "pip", "install", f"torch=={TORCH_VERSION}"])
    _run([str(python), "-m", "pip", "install", *packages])
    if not ready(python):
        raise SystemExit(f"{' '.join(packages)} with torch {TORCH_VERSION} did not install in {folder}")
    return python


def _has_trl(python: Path, version: str = TRL_VERSION) -> bool:
    code = "import trl, vaderSentiment, torch; print(trl.__version__, torch.__version__)"
    versions = _versions(python, code)
    return versions is not None and versions[0] == version and versions[1].startswith(TORCH_VERSION)


def _has_lab(python: Path) -> bool:
    versions = _versions(python, "import rlhf_lab, torch; print(torch.__version__)")
    return versions is not None and versions[0].startswith(TORCH_VERSION)


def _versions(python: Path, code: str) -> list[str] | None:
    """What `code` prints, split into words; None if it fails (a package is missing)."""
    try:
        return _probe(python, code).split()
    except subprocess.CalledProcessError:
        return None


def _probe(python: Path, code: str) -> str:
    return subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


def _run(command: list[str]) -> None:
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)


# ------------------------------------------------------------------------------- sides
def run_measured(command: list[str], workdir: Path, name: str, env: dict) -> float:
    """Run `command` under benchmarks/_peak_rss.py, its output in `workdir/<name>.log`; peak RSS MB."""
    rss_file, log_file = workdir / f"{name}.rss.json", workdir / f"{name}.log"
    wrapped = [sys.executable, str(HERE / "_peak_rss.py"), str(rss_file), *command]
    with open(log_file, "w") as log:
        done = subprocess.run(wrapped, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=Path.cwd())
    if done.returncode != 0:
        tail = log_file.read_text().splitlines()[-40:]
        raise SystemExit(f"{name} failed (exit {done.returncode}):\n" + "\n".join(tail))
    return json.loads(rss_file.read_text())["peak_rss_mb"]


def rlhf_lab_side(algo: str, inputs: dict, args, workdir: Path, env: dict) -> dict:
    overrides = [
        *SHARED_OVERRIDES,
        *ALGO_OVERRIDES[algo],
        f"rl.max_steps={args.steps}",
        f"rl.lr={args.lr}",
        f"rl.policy={inputs['policy']}",
        f"hydra.run.dir={workdir / 'run'}",
        f"paths.artifacts={workdir / 'artifacts'}",  # the benchmark's policy stays out of the lab's store
    ]
    if algo == "ppo":
        overrides.append(f"objective.path={inputs['reward_model']}")
    command = [str(lab_python()), "-m", "rlhf_lab.cli", *overrides]  # = `rlhf-lab <overrides>`
    peak = run_measured(command, workdir, f"rlhf_lab_{algo}", env)
    seconds, lengths, at_start = read_rl_metrics(workdir / "run" / "rl" / "csv" / "metrics.csv")
    tokens = [length * ROLLOUTS_PER_STEP for length in lengths]
    return {
        "step_seconds": seconds,
        "tokens_per_step": tokens,
        "peak_rss_mb": peak,
        "rss_at_start_mb": at_start,
    }


def read_rl_metrics(path: Path) -> tuple[list[float], list[float], float]:
    """Per RL step, in step order: rl/train/time/step and rl/train/length (mean completion tokens);
    and the resident memory when training began (rl/train/memory/at_start_mb)."""
    with open(path) as f:
        rows = [r for r in csv.DictReader(f) if r.get("rl/train/time/step")]
    rows.sort(key=lambda r: int(r["step"]))
    seconds = [float(r["rl/train/time/step"]) for r in rows]
    lengths = [float(r["rl/train/length"]) for r in rows]
    return seconds, lengths, float(rows[0]["rl/train/memory/at_start_mb"])


def trl_side(algo: str, inputs: dict, args, workdir: Path, env: dict) -> dict:
    out = workdir / f"trl_{algo}.json"
    command = [
        str(trl_python(TRL_OF[algo])),
        str(HERE / "trl_side.py"),
        f"--algo={algo}",
        f"--policy={inputs['policy']}",
        f"--prompts={inputs['prompts']}",
        f"--steps={args.steps}",
        f"--warmup={args.warmup}",
        f"--lr={args.lr}",
        f"--out={out}",
    ]
    if algo == "ppo":
        command.append(f"--reward-model={inputs['reward_model']}")
    peak = run_measured(command, workdir, f"trl_{algo}", env)
    reported = json.loads(out.read_text())
    return {
        "step_seconds": reported["step_seconds"],
        "tokens_per_step": reported["tokens_per_step"],
        "peak_rss_mb": peak,
        "rss_at_start_mb": reported["rss_at_start_mb"],
        "trl_version": reported["trl_version"],
    }


def summarize(rounds: list[dict], warmup: int) -> dict:
    """One side's runs pooled: the median step time over every run's steps after its first `warmup`;
    completion tokens/s = mean completion tokens per step / that median. Memory: the largest peak
    resident memory of a run, and the largest part of a peak that training added (peak − resident
    memory at the first step, when libraries and models are loaded)."""
    seconds, tokens = [], []
    for run in rounds:
        if len(run["step_seconds"]) <= warmup or len(run["tokens_per_step"]) < len(run["step_seconds"]):
            raise SystemExit(
                f"got {len(run['step_seconds'])} step times and {len(run['tokens_per_step'])} token counts;"
                f" need > {warmup}"
            )
        seconds += run["step_seconds"][warmup:]
        tokens += run["tokens_per_step"][warmup : len(run["step_seconds"])]
    median = statistics.median(seconds)
    mean_tokens = statistics.fmean(tokens)
    return {
        "median_step_s": median,
        "completion_tokens_per_s": mean_tokens / median,
        "mean_completion_tokens": mean_tokens,
        "steps_measured": len(seconds),
        "peak_rss_mb": max(run["peak_rss_mb"] for run in rounds),
        "rss_at_start_mb": max(run["rss_at_start_mb"] for run in rounds),
        "training_mb": max(run["peak_rss_mb"] - run["rss_at_start_mb"] for run in rounds),
        "rounds": rounds,
    }


# ------------------------------------------------------------------------------- report
def ratios(ours: dict, trl: dict) -> dict:
    return {
        "throughput": ours["completion_tokens_per_s"] / trl["completion_tokens_per_s"],
        "step_time": ours["median_step_s"] / trl["median_step_s"],
        "memory": ours["peak_rss_mb"] / trl["peak_rss_mb"],
        "training_memory": ours["training_mb"] / trl["training_mb"],
    }


def print_table(results: dict, args) -> None:
    print(
        f"\n{ROLLOUTS_PER_STEP} completions/step, <=48 new tokens, T=1, beta 0.05, 1 epoch; "
        f"median of {args.rounds} x {args.steps - args.warmup} steps after {args.warmup} warmup each; CPU, "
        f"{args.threads or torch_threads()} threads"
    )
    print(
        f"{'algo':6s} {'side':10s} {'s/step':>8s} {'tok/s':>8s} {'tok/step':>9s} {'peak RSS MB':>12s}"
        f" {'at start MB':>12s} {'training MB':>12s}"
    )
    for algo, row in results.items():
        for side in ("rlhf_lab", "trl"):
            r = row[side]
            print(
                f"{algo:6s} {side:10s} {r['median_step_s']:8.3f} {r['completion_tokens_per_s']:8.0f} "
                f"{r['mean_completion_tokens']:9.0f} {r['peak_rss_mb']:12.0f} {r['rss_at_start_mb']:12.0f}"
                f" {r['training_mb']:12.0f}"
            )
        q = row["ratio"]
        print(
            f"{algo:6s} rlhf_lab/TRL: throughput {q['throughput']:.2f}x, step time {q['step_time']:.2f}x, "
            f"peak memory {q['memory']:.2f}x, training memory {q['training_memory']:.2f}x"
        )


def torch_threads() -> int:
    """torch's default thread count on this machine (what both sides use without --threads)."""
    import torch

    return torch.get_num_threads()


def child_env(args) -> dict:
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRL_EXPERIMENTAL_SILENCE="1")
    if args.threads:
        env |= {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    return env


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--algos", default="rloo,ppo", help="comma-separated: rloo, ppo, grpo")
    parser.add_argument("--steps", type=int, default=12, help="RL steps per run, warmup included")
    parser.add_argument("--warmup", type=int, default=2, help="first steps of a run left out of the median")
    parser.add_argument(
        "--rounds", type=int, default=2, help="runs per side, alternating rlhf_lab and TRL (default 2)"
    )
    parser.add_argument(
        "--home",
        default=os.environ.get("RLHF_LAB_HOME", "lab"),
        help="rlhf_lab home (default $RLHF_LAB_HOME or lab)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads of both sides (default: torch's)"
    )
    parser.add_argument(
        "--lr",
        type=float,
        default=1e-6,
        help="learning rate of both sides (default 1e-6: the policies stay at SFT, so both sides sample "
        "completions of the same length and do the same work; a step costs the same at any lr)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="results JSON (default: benchmarks/results/rl_step.json for rloo,ppo, else "
        "rl_step_<algos>.json, so that a run of other algorithms leaves the default's results)",
    )
    args = parser.parse_args()
    algos = [a.strip() for a in args.algos.split(",") if a.strip()]
    if args.out is None:
        named = RESULTS.with_name(f"rl_step_{'_'.join(algos)}.json")
        args.out = RESULTS if algos == ["rloo", "ppo"] else named
    if unknown := set(algos) - set(ALGO_OVERRIDES):
        parser.error(f"unknown algos {sorted(unknown)}; choose from {sorted(ALGO_OVERRIDES)}")
    if args.steps <= args.warmup:
        parser.error("--steps must exceed --warmup")

    for version in sorted({TRL_OF[a] for a in algos}):  # create the environments first: a failure costs
        trl_python(version)  # no training
    lab_python()
    inputs = tiny_world_inputs(Path(args.home).resolve())
    env = child_env(args)
    results = {}
    sides = {"rlhf_lab": rlhf_lab_side, "trl": trl_side}
    for algo in algos:
        runs: dict[str, list[dict]] = {side: [] for side in sides}
        for round_ in range(1, args.rounds + 1):  # alternate the sides: drifts of a shared machine even out
            for side, run_side in sides.items():
                print(f"{algo}: {side}, round {round_}/{args.rounds}, {args.steps} steps ...", flush=True)
                with tempfile.TemporaryDirectory(prefix=f"rl_step_{algo}_") as tmp:
                    runs[side].append(run_side(algo, inputs, args, Path(tmp), env))
        ours, trl = (summarize(runs[side], args.warmup) for side in sides)
        trl["trl_version"] = runs["trl"][0]["trl_version"]
        results[algo] = {"rlhf_lab": ours, "trl": trl, "ratio": ratios(ours, trl)}

    print_table(results, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "settings": {
            "steps": args.steps,
            "warmup": args.warmup,
            "rounds": args.rounds,
            "completions_per_step": ROLLOUTS_PER_STEP,
            "max_new_tokens": 48,
            "temperature": 1.0,
            "beta": 0.05,
            "epochs": 1,
            "minibatches": 1,
            "lr": args.lr,
            "threads": args.threads or torch_threads(),
        },
        "inputs": {k: str(v) for k, v in inputs.items()},
        "machine": machine(),
        "results": results,
    }
    args.out.write_text(json.dumps(record, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
