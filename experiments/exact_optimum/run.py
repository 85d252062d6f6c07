"""Every loss of rlhf_lab against the exact optimum of an enumerable world (`rlhf_lab.world.enumerable`).

    python experiments/exact_optimum/run.py [--seeds 0 1 2 3 4] [--runs ppo ...] [--rl-steps 400] [--out DIR]
        [--repro {native,portable}]

writes DIR/results.csv (one row per run and seed, floats as their shortest round-trip repr, so they read
back bitwise), DIR/results.md (the table of the write-up) and DIR/repro.json (the arithmetic in effect:
`rlhf_lab.repro`, portable by default, at one thread). A portable rerun reproduces the committed CSV's
rows exactly: `python -m rlhf_lab.repro check experiments/exact_optimum/results.csv DIR/results.csv`.

A tabular autoregressive policy starts at π_ref and is trained by each entry of the RL stage's algorithm
table with its `conf/algo/` settings, through the stage's own functions (`experience.assemble`: the
per-token KL penalty and whitening; the entry's advantages and loss; `Algorithm.kl_placement`;
`losses.kl_loss`), on completions sampled from itself; and by each DPO-family loss through the DPO stage's
`preference_loss`, on fresh pairs of π_ref's samples labelled by Bradley–Terry on r. What is not the
stage's (the tabular policy, the sampler, Adam with a linear decay to 0, the schedule) is the same for
every run of a family. Each run reports KL(π‖π*), the objective gap J(π*) − J(π) = β·KL(π‖π*), and
the distance to the exact optimum of its own loss where that is not π* (`targets`).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from rlhf_lab import api, repro
from rlhf_lab.config import AlgoConfig, DPOConfig
from rlhf_lab.losses import kl_loss
from rlhf_lab.report.stats import mean_difference
from rlhf_lab.rollout import Rollout
from rlhf_lab.stages.dpo.loss import preference_loss
from rlhf_lab.stages.dpo.pairs import PairLogps, PairSet
from rlhf_lab.stages.rl.algorithms import ALGORITHMS, MovingAverage
from rlhf_lab.stages.rl.experience import assemble
from rlhf_lab.world.enumerable import (
    EnumerableWorld,
    dpo_family,
    k3_fixed_point,
    kl,
    make_world,
    preference_optimum,
)

Tensor = torch.Tensor
OUT = Path(__file__).parent
FIELDS = ["run", "target", "kl_to_optimum", "objective_gap", "to_target", "target_gap", "steps", "seed"]

# run -> the conf/algo file (RL) or dpo.loss (DPO family), and overrides of its settings
RL = {"ppo": ("ppo", ()), "ppo_critic": ("ppo_critic", ())} | {name: (name, ()) for name in ALGORITHMS}
KL_IN_REWARD = ("algo.kl.placement=reward", "algo.kl.estimator=k1")
RL |= {  # variants that locate a bias
    "gspo_on_policy": ("gspo", ("algo.minibatches=1",)),
    "dr_grpo_k8": ("dr_grpo", ("algo.samples_per_prompt=8",)),
    "grpo_kl_in_reward": ("grpo", KL_IN_REWARD),
    "dr_grpo_kl_in_reward": ("dr_grpo", KL_IN_REWARD),
}
KL_ON = "algo.kl.beta=0.05"  # any β > 0 keeps the KL; train_rl then uses the world's β
RL |= {  # the losses of 2025 have no KL term; with one, in the reward, their target is π*
    f"{name}_kl_in_reward": (name, (*KL_IN_REWARD, KL_ON)) for name in ("cispo", "gmpo", "sapo")
}
PREFERENCE = {name: (name, ()) for name in ("dpo", "cdpo", "ipo", "simpo")}
RUNS = RL | PREFERENCE


@dataclass(frozen=True)
class Schedule:
    """What every run of a family shares: steps, samples (RL) or pairs (DPO) per step, Adam's learning
    rate, decayed linearly to 0 over the optimizer's updates."""

    steps: int
    batch: int
    lr: float = 0.1


SCHEDULES = {"rl": Schedule(400, 512), "preference": Schedule(1000, 1024)}


# ------------------------------------------------------------------------------------------ RL
def algo_config(name: str, overrides: tuple[str, ...] = ()) -> AlgoConfig:
    """The validated `algo` of `rlhf-lab stage=rl algo=<name> <overrides>`, refused where it switches on a
    step of the RL module that `train_rl` does not take (score shaping, entropy bonus, dropout)."""
    algo = api.compose("stage=rl", f"algo={name}", *overrides).algo
    shaped = algo.reward_clip is not None or algo.missing_eos_penalty is not None
    if shaped or algo.entropy_coef or algo.dropout:
        raise ValueError(f"algo={name}: reward_clip, missing_eos_penalty, entropy_coef, dropout must be off")
    return algo


def rollout_of(world: EnumerableWorld, index: Tensor, logprobs: Tensor) -> Rollout:
    """The completions `index` (N,) of the world's one-token prompt as the RL stage's Rollout."""
    ones = torch.ones(len(index), 1, dtype=torch.long)  # (N, 1)
    return Rollout(ones, ones, world.tokens[index], world.mask[index], logprobs, world.eos)


def train_rl(world: EnumerableWorld, run: str, seed: int, schedule: Schedule = SCHEDULES["rl"]) -> Tensor:
    """(Y,) log-probs of the tabular policy after `schedule.steps` RL steps: sample, score, assemble the
    experience, then algo.epochs × algo.minibatches updates on random minibatches, as `RLModule` does."""
    algo = algo_config(*RL[run])
    entry = ALGORITHMS[algo.name]
    kl_at = entry.kl_placement(algo.kl.placement, world.beta if algo.kl.beta > 0 else 0.0)  # DAPO's β stays 0
    logits = world.ref_logits.clone().requires_grad_(True)  # (S, V+1) the policy starts at π_ref
    values = value_table(world, algo)  # (S,) or None
    optimizer = torch.optim.Adam([logits] + ([values] if values is not None else []), lr=schedule.lr)
    updates = schedule.steps * algo.epochs * algo.minibatches
    decay = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1 - i / updates)
    generator = torch.Generator().manual_seed(seed)
    baseline = MovingAverage(algo.baseline_decay)
    for _ in range(schedule.steps):
        with torch.no_grad():
            index = world.sample(logits, schedule.batch, generator)  # (N,) k consecutive rows: a group
            old = world.token_logprobs(logits, index)  # (N, T)
            ref = world.token_logprobs(world.ref_logits, index)  # (N, T)
            old_values = None if values is None else values[world.states[index]]  # (N, T)
            scores = world.reward[index]  # (N,)
            advantages_of = functools.partial(entry.advantages, algo=algo, baseline=baseline)
            rollout = rollout_of(world, index, old)
            beta = kl_at.in_reward
            experience, _ = assemble(rollout, scores, old, ref, old_values, algo, advantages_of, beta)
            keep = None if entry.keep is None else entry.keep(scores, algo.samples_per_prompt)  # (N,) bool
            experience = dataclasses.replace(experience, keep=keep, max_new_tokens=world.tokens.shape[1])
        for _ in range(algo.epochs):
            for part in torch.randperm(len(index), generator=generator).split(len(index) // algo.minibatches):
                batch = experience.select(part)
                if batch.keep is not None and batch.mask.sum() == 0:
                    continue  # every row left out (DAPO's groups of equal rewards)
                logprobs = world.token_logprobs(logits, index[part])  # (n, T)
                value = None if values is None else values[world.states[index[part]]]  # (n, T)
                loss, _ = entry.loss(logprobs, value, batch, algo, kl_at.in_own_loss)
                if kl_at.added_to_loss:
                    loss = loss + kl_at.added_to_loss * kl_loss(logprobs, batch.ref_logprobs, batch.mask)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                decay.step()
    return world.logprobs(logits.detach())


def value_table(world: EnumerableWorld, algo: AlgoConfig) -> Tensor | None:
    """(S,) a tabular value per prefix: 0 for the value head; for the critic, the reward of the prefix ended
    there (the analogue of a critic initialized from the reward model, Stiennon 2020); None without one."""
    if algo.value.model == "none":
        return None
    if algo.value.model == "critic":
        return world.reward[world.ends[:, world.eos]].clone().requires_grad_(True)
    return torch.zeros(len(world.ref_logits), dtype=world.reward.dtype, requires_grad=True)


# ----------------------------------------------------------------------------------- preferences
def dpo_config(name: str, beta: float) -> DPOConfig:
    """`dpo` of `rlhf-lab stage=dpo dpo.loss=<name>`, β the world's except for SimPO, which keeps its
    paper's 2.0 (its reward is the length-normalized log π, with no reference and no tie to β)."""
    overrides = [] if name == "simpo" else [f"dpo.beta={beta}"]
    return api.compose("stage=dpo", f"dpo.loss={name}", *overrides).dpo


def train_preference(
    world: EnumerableWorld, run: str, seed: int, schedule: Schedule = SCHEDULES["preference"]
) -> Tensor:
    """(Y,) log-probs of the tabular policy after `schedule.steps` steps of the DPO stage's loss, each on
    `schedule.batch` fresh pairs y, y' ~ π_ref, y preferred with probability σ(r(y) − r(y'))."""
    settings = dpo_config(PREFERENCE[run][0], world.beta)
    logits = world.ref_logits.clone().requires_grad_(True)  # (S, V+1)
    optimizer = torch.optim.Adam([logits], lr=schedule.lr)
    decay = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1 - i / schedule.steps)
    generator = torch.Generator().manual_seed(seed)
    ref, lengths = world.ref_logprobs, world.lengths  # (Y,) each
    for _ in range(schedule.steps):
        first, second = world.sample(world.ref_logits, 2 * schedule.batch, generator).chunk(2)  # (B,) each
        p_first = torch.sigmoid(world.reward[first] - world.reward[second])  # (B,) Bradley–Terry
        wins = torch.rand(schedule.batch, generator=generator, dtype=ref.dtype) < p_first  # (B,)
        chosen, rejected = torch.where(wins, first, second), torch.where(wins, second, first)  # (B,) each
        logp = world.logprobs(logits)  # (Y,)
        logps = PairLogps(logp[chosen], logp[rejected], lengths[chosen], lengths[rejected])
        pairs = pair_set(world, chosen, rejected)
        loss, _, _ = preference_loss(settings, settings.resolved_beta(), logps, pairs)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        decay.step()
    return world.logprobs(logits.detach())


def pair_set(world: EnumerableWorld, chosen: Tensor, rejected: Tensor) -> PairSet:
    """The DPO stage's PairSet of the pairs (chosen, rejected) (B,) of the world's one-token prompt."""
    tokens = [world.tokens[y, :n].tolist() for y, n in enumerate(world.lengths.tolist())]
    ref = world.ref_logprobs  # (Y,)
    return PairSet(
        [[1]] * len(chosen),
        [tokens[y] for y in chosen.tolist()],
        [tokens[y] for y in rejected.tolist()],
        world.reward[chosen],
        world.reward[rejected],
        ref[chosen],
        ref[rejected],
    )


# ------------------------------------------------------------------------------------- targets
def targets(world: EnumerableWorld) -> dict[str, tuple[str, Tensor | None]]:
    """run -> (what its loss converges to, those exact log-probs (Y,), or None where only measured)."""
    out: dict[str, tuple[str, Tensor | None]] = {run: ("π*", world.optimum()) for run in RUNS}
    for run in ("dr_grpo", "dr_grpo_k8"):
        k = algo_config(*RL[run]).samples_per_prompt
        out[run] = (f"k3 fixed point (k={k})", k3_fixed_point(world, 1 - 1 / k))
    point = torch.full_like(world.reward, -math.inf)  # (Y,) all mass on the best completion
    point[world.reward.argmax()] = 0.0
    for run in RL:  # a file without a KL term (dapo, cispo, gmpo, sapo): the reward alone
        if algo_config(*RL[run]).kl.beta == 0:
            out[run] = ("argmax r", point)
    out["grpo"] = out["gspo"] = out["gspo_on_policy"] = ("measured", None)
    for run in ("cdpo", "ipo", "simpo"):
        settings = dpo_config(run, world.beta)
        beta = settings.resolved_beta()
        margin_loss, normalized = dpo_family(beta, settings.epsilon, settings.gamma_ratio * beta)[run]
        out[run] = (f"{run} optimum", preference_optimum(world, margin_loss, normalized))
    return out


def to_target(logp: Tensor, target: Tensor | None) -> float:
    """KL(π‖target), or KL(target‖π) = −log π(y) when the target is a point mass on y (where KL(π‖target)
    is infinite); NaN without a target."""
    if target is None:
        return math.nan
    return kl(target, logp) if torch.isinf(target).any() else kl(logp, target)


def run_one(
    world: EnumerableWorld,
    run: str,
    seed: int,
    target: tuple[str, Tensor | None],
    schedules: dict[str, Schedule] = SCHEDULES,
) -> dict:
    """One CSV row: train `run` from `seed`, then measure it against π* and against its own target."""
    family = "rl" if run in RL else "preference"
    logp = (train_rl if family == "rl" else train_preference)(world, run, seed, schedules[family])
    label, exact = target
    return {
        "run": run,
        "target": label,
        "kl_to_optimum": kl(logp, world.optimum()),
        "objective_gap": world.gap(logp),
        "to_target": to_target(logp, exact),
        "target_gap": math.nan if exact is None else world.gap(exact),
        "steps": schedules[family].steps,
        "seed": seed,
    }


def table(rows: list[dict]) -> str:
    """The write-up's table from the CSV's rows: mean ± 95% t-interval over seeds (`report.stats`)."""

    def number(value: float) -> str:  # 0 below rounding (π*'s own gap is ±1e-16)
        return "0" if abs(value) < 1e-12 else f"{value:.4f}" if abs(value) >= 1e-3 else f"{value:.1e}"

    def cell(values: list[float]) -> str:
        if any(math.isnan(v) for v in values):
            return "–"
        if len(values) < 2:
            return number(values[0])
        d = mean_difference(values)
        return f"{number(d.mean)} ± {number(d.half)}"

    lines = [
        "| run | its target | target's gap (exact) | KL(π‖π*) | objective gap | to its target | seeds |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for run in dict.fromkeys(r["run"] for r in rows):
        mine = [r for r in rows if r["run"] == run]
        column = {key: [float(r[key]) for r in mine] for key in FIELDS[2:6]}
        cells = [cell(column["target_gap"][:1])] + [cell(column[k]) for k in FIELDS[2:5]]
        lines.append(f"| {run} | {mine[0]['target']} | " + " | ".join(cells) + f" | {len(mine)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--rl-steps", type=int, default=SCHEDULES["rl"].steps, help="steps of every RL run")
    parser.add_argument("--table-only", action="store_true", help="only rewrite results.md from results.csv")
    parser.add_argument("--repro", choices=repro.MODES, default="portable", help="rlhf_lab.repro mode")
    args = parser.parse_args(argv)
    if not args.table_only:
        setting = pin(args.repro)
        rows = train_all(args)
        write_csv(args.out / "results.csv", rows)
        (args.out / "repro.json").write_text(json.dumps(setting, indent=2, ensure_ascii=False) + "\n")
    with open(args.out / "results.csv") as f:
        (args.out / "results.md").write_text(markdown := table(list(csv.DictReader(f))))
    print(markdown)


def pin(mode: str) -> dict:
    """Put `mode`'s arithmetic in effect before any torch computation, then one thread (these tensors are
    tiny: threads only contend; one is itself a fixed count). Returns what is in effect for repro.json: the
    thread count is the one the runs use, the canary (portable) the one `repro.pin` computed at the mode's
    own thread count, where its reference holds (at one thread its sums split otherwise)."""
    setting = repro.pin(mode)
    torch.set_num_threads(1)
    return setting | {"threads": torch.get_num_threads()}


def train_all(args: argparse.Namespace) -> list[dict]:
    """A row per run and seed of the command line's, printed as it comes."""
    torch.set_num_threads(1)
    world = make_world()
    goals = targets(world)
    schedules = SCHEDULES | {"rl": dataclasses.replace(SCHEDULES["rl"], steps=args.rl_steps)}
    rows = []
    for run in args.runs:
        for seed in args.seeds:
            start = time.perf_counter()
            rows.append(run_one(world, run, seed, goals[run], schedules))
            print(
                f"{run:20s} seed {seed}: KL(π‖π*) {rows[-1]['kl_to_optimum']:.4f}, to target "
                f"{rows[-1]['to_target']:.4f} ({time.perf_counter() - start:.1f} s)",
                flush=True,
            )
    return rows


def write_csv(path: Path, rows: list[dict]) -> None:
    """The rows, floats as their shortest round-trip repr (they read back bitwise, as in
    `rlhf_lab.protocol.curves`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: repr(v) if isinstance(v, float) else v for k, v in r.items()} for r in rows)


if __name__ == "__main__":
    main()
