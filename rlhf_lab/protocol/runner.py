"""Running a protocol: every tuning run, the choice of each arm's setting, every evaluation run, one after
another in this process through the real pipeline (`api.run`) and its artifact cache, so a second
`rlhf-lab-compare` reuses every finished run and continues an interrupted one (RL and DPO resume from
their checkpoints) without changing a number.
"""

from __future__ import annotations

import functools
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rlhf_lab import api
from rlhf_lab.artifacts import is_complete
from rlhf_lab.config import Config
from rlhf_lab.pipeline import artifact_dir
from rlhf_lab.protocol import analysis
from rlhf_lab.protocol.curves import MissingBudget, read_run
from rlhf_lab.protocol.spec import Protocol, ProtocolError

STAGES = ("rl", "dpo")  # the training stages whose artifacts hold eval.jsonl and budget.jsonl


@dataclass(frozen=True)
class Run:
    phase: str  # tuning | evaluation
    arm: str
    setting: str  # the tuned overrides, or "default"
    seed: int
    overrides: tuple[str, ...]

    def identity(self) -> dict:
        return {"phase": self.phase, "arm": self.arm, "setting": self.setting, "seed": self.seed}


def make_run(protocol: Protocol, phase: str, arm: str, setting: tuple[str, ...], seed: int) -> Run:
    """The run of `arm` at `setting` and `seed`: base, arm, setting, (tuning) overrides, then the seed."""
    overrides = [*protocol.base, *protocol.arms[arm].overrides, *setting]
    overrides += list(protocol.tuning_overrides) if phase == "tuning" else []
    key = protocol.seed_key or f"{stage_of(tuple(overrides))}.seed"
    return Run(phase, arm, analysis.setting_label(setting), seed, (*overrides, f"{key}={seed}"))


@functools.lru_cache(maxsize=64)
def stage_of(overrides: tuple[str, ...]) -> str:
    """The stage the overrides run (composing takes a while: once per arm and setting)."""
    return api.compose(*overrides).stage


def tuning_runs(protocol: Protocol) -> list[Run]:
    """Every grid point of every arm that has more than one, on every tuning seed."""
    return [
        make_run(protocol, "tuning", name, setting, seed)
        for name, arm in protocol.arms.items()
        if len(arm.settings()) > 1
        for setting in arm.settings()
        for seed in protocol.tuning_seeds
    ]


def evaluation_runs(protocol: Protocol, chosen: dict[str, str]) -> list[Run]:
    """Each arm at its chosen setting on every evaluation seed."""
    settings = {
        name: next(s for s in arm.settings() if analysis.setting_label(s) == chosen[name])
        for name, arm in protocol.arms.items()
    }
    return [
        make_run(protocol, "evaluation", name, settings[name], seed)
        for name in protocol.arms
        for seed in protocol.evaluation_seeds
    ]


def check(protocol: Protocol) -> None:
    """Compose every run the protocol can make (each arm at each setting, in both phases) before anything
    runs: a ProtocolError names the arm of a bad override, of a stage other than rl or dpo, or of an
    override that sets the seed the protocol varies."""
    composed = set()
    for name, arm in protocol.arms.items():
        for setting in arm.settings():
            for phase in ("tuning", "evaluation"):
                run = make_run(protocol, phase, name, setting, protocol.evaluation_seeds[0])
                if run.overrides in composed:
                    continue
                composed.add(run.overrides)
                seed_key = run.overrides[-1].partition("=")[0]
                if any(o.partition("=")[0].lstrip("+~") == seed_key for o in run.overrides[:-1]):
                    raise ProtocolError(
                        f"arms.{name}: its overrides set {seed_key}, the seed the protocol varies"
                    )
                try:
                    cfg = api.compose(*run.overrides)
                except Exception as e:
                    raise ProtocolError(f"arms.{name} ({run.setting}, {phase}): {e}") from e
                if cfg.stage not in STAGES or cfg.pipeline:
                    raise ProtocolError(
                        f"arms.{name}: stage={cfg.stage}, pipeline={list(cfg.pipeline)}; a protocol compares "
                        "runs of one stage, rl or dpo (their upstream stages are built as needed)"
                    )


def plan(protocol: Protocol) -> str:
    """What the protocol will run, in words."""
    tuning = tuning_runs(protocol)
    lines = [
        f"{protocol.name}: {len(tuning)} tuning runs, then {len(protocol.arms)} arms × "
        f"{len(protocol.evaluation_seeds)} evaluation seeds"
    ]
    lines += [f"  tuning {r.arm} {r.setting} seed {r.seed}: {' '.join(r.overrides)}" for r in tuning]
    for name, arm in protocol.arms.items():
        run = make_run(protocol, "evaluation", name, (), protocol.evaluation_seeds[0])
        tuned = f" and its chosen {', '.join(arm.grid)}" if arm.grid else ""
        lines.append(
            f"  evaluation {name} seeds {list(protocol.evaluation_seeds)}: {' '.join(run.overrides)}{tuned}"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- executing
def execute(protocol: Protocol, run: Run, number: str) -> list[dict]:
    """Run (or reuse) one run and return its curve rows; an artifact built before budgets were recorded
    is rebuilt (the same numbers, now with the budget)."""
    cfg = api.compose(*run.overrides)
    artifact = artifact_dir(cfg, cfg.stage)
    cached = is_complete(artifact)
    start = time.perf_counter()
    try:
        curve = read_run(_run(cfg, protocol, run))
    except MissingBudget:
        cached = False
        curve = read_run(_run(api.compose(*run.overrides, "cache=false"), protocol, run))
    seconds = time.perf_counter() - start
    how = "reused" if cached else f"trained in {seconds:.0f} s"
    final = curve[-1].get(protocol.metric)
    shown = "" if final is None else f"  final {protocol.metric} {final:+.3f}"
    print(f"[{number}] {run.phase} {run.arm} {run.setting} seed {run.seed}: {how}{shown}", file=sys.stderr)
    return [run.identity() | row for row in curve]


def _run(cfg: Config, protocol: Protocol, run: Run) -> Path:
    """The run's artifact, through the pipeline; its logs under paths.runs/compare/<protocol>/..."""
    slug = re.sub(r"[^\w.=-]+", "_", run.setting)
    run_dir = (
        Path(cfg.paths.runs) / "compare" / protocol.name / run.phase / run.arm / slug / f"seed_{run.seed}"
    )
    return Path(api.run(cfg, run_dir)["artifacts"][cfg.stage])


def run_all(protocol: Protocol) -> list[dict]:
    """Tune, choose, evaluate: the curve rows of every run, tuning runs first."""
    check(protocol)
    tuning = tuning_runs(protocol)
    total = len(tuning) + len(protocol.arms) * len(protocol.evaluation_seeds)
    print(
        f"{protocol.name}: {len(tuning)} tuning runs, then {total - len(tuning)} evaluation runs",
        file=sys.stderr,
    )
    rows = [r for i, run in enumerate(tuning) for r in execute(protocol, run, f"{i + 1}/{total}")]
    chosen = analysis.choose(protocol, analysis.tuning_table(protocol, analysis.finals(protocol, rows)))
    print("chosen: " + ", ".join(f"{arm} {s}" for arm, s in chosen.items()), file=sys.stderr)
    for i, run in enumerate(evaluation_runs(protocol, chosen), start=len(tuning) + 1):
        rows += execute(protocol, run, f"{i}/{total}")
    return rows
