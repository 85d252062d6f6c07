"""A run's held-out samples rescored with any scorer: a new gold or reward model gives every old run's
overoptimization curve without retraining.

    python -m rlhf_lab.report.rescore <path> --score <name or folder> [--score ...] [--out DIR]
    rlhf-lab-rescore lab/runs/multirun/<time> --score careful --score lab/artifacts/reward/<hash>

<path> is an RL or DPO artifact folder (it holds `eval_history.jsonl`, each held-out evaluation's
prompts and completions), a run folder, or a multirun folder (every run below it; an artifact shared by
several runs is rescored once). A score is resolved exactly as the `gold` setting resolves its value
(`scorers.gold_scorer`): a gold of the world by name (`reader`, `careful`, `vader`), or a reward-model
folder (a `reward` artifact, any HF sequence-classification folder) or hub id. For each run and
evaluation step: the mean of each score over the step's samples, beside the KL, gold and proxy reward
the run logged at that step (`eval.jsonl`). Rescoring with the gold a run trained with (and on the
device it ran on) gives its logged gold curve exactly.

Writes to DIR (default `<path>/rescore`, or `./rescore/<artifact>` for an artifact folder):
    rescored.csv   run, configuration, step, kl, sqrt_kl, logged_gold, logged_reward, one column per score
    rescored.png   each score against √KL, one line per run
A run built before `eval_history.jsonl` existed is named and skipped.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rlhf_lab import plots
from rlhf_lab.config import Config, ConfigError
from rlhf_lab.errors import UserError
from rlhf_lab.evaluation import EVAL_HISTORY, EVALS
from rlhf_lab.report.runs import find_runs
from rlhf_lab.scorers import Scorer, gold_scorer

CSV_FILE = "rescored.csv"
PLOT_FILE = "rescored.png"
LOGGED = ("kl", "sqrt_kl", "logged_gold", "logged_reward")  # the columns read from eval.jsonl


@dataclass
class Source:
    """One training artifact to rescore: its name in the table, its configuration, its folder."""

    name: str
    configuration: str
    artifact: Path


@dataclass
class Rescored:
    rows: list[dict] = field(default_factory=list)  # one per run and evaluation step
    scores: list[str] = field(default_factory=list)  # the score columns, as named on the command line
    skipped: list[str] = field(default_factory=list)  # a message per run left out
    csv: Path | None = None
    plot: Path | None = None


# ------------------------------------------------------------------------------------------ finding
def is_training_artifact(folder: Path) -> bool:
    """An RL or DPO artifact folder: it holds the evaluations of a training run."""
    return (folder / EVALS).is_file() or (folder / EVAL_HISTORY).is_file()


def find_sources(path: Path) -> tuple[list[Source], list[str]]:
    """The training artifacts of `path` (an artifact, a run or a multirun folder), and a message for each
    run that has none to rescore. UserError when `path` is none of these."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: no such folder (give an RL or DPO artifact, a run or a multirun folder)")
    if is_training_artifact(path):
        return [Source(path.name, "", path)], []
    runs = find_runs(path)
    if not runs:
        raise UserError(
            f"{path}: neither an RL or DPO artifact folder (no {EVALS} or {EVAL_HISTORY}) nor a run or "
            "multirun folder (no .hydra/ below it)"
        )
    sources, notes, seen = [], [], set()
    for run in runs:
        trained = [(s, Path(a)) for s, a in run.artifacts.items() if is_training_artifact(Path(a))]
        name = str(run.path.relative_to(path)) if run.path != path else path.name
        if not trained and run.status != "completed":
            notes.append(f"{run.path}: {run.status} run with no RL or DPO artifact, skipped")
        for stage, artifact in trained:
            if artifact.resolve() in seen:  # a cache hit of an earlier run's artifact
                continue
            seen.add(artifact.resolve())
            label = "" if run.label == "default" else run.label
            sources.append(Source(f"{name}/{stage}" if len(trained) > 1 else name, label, artifact))
    return sources, notes


# ------------------------------------------------------------------------------------------ scoring
def build_scorers(names: list[str], device: str = "cpu") -> dict[str, Scorer]:
    """Each name resolved as the `gold` setting resolves its value (`scorers.gold_scorer`, the one rule);
    UserError for a name that is none of a world gold, a reward-model folder or a loadable hub id."""
    scorers = {}
    for name in dict.fromkeys(names):
        try:
            scorer = gold_scorer(dataclasses.replace(Config(), gold=name), device) if name else None
        except ConfigError as error:
            raise UserError(f"--score {str(error).removeprefix('gold: ')}") from None
        except OSError as error:  # a hub id that is not there, or not reachable offline
            raise UserError(f"--score {name!r}: cannot load it as a reward model: {error}") from None
        if scorer is None:
            raise UserError("--score: an empty name; give a gold of the world or a reward-model folder")
        scorers[name] = scorer
    return scorers


def read_jsonl(path: Path) -> list[dict]:
    return (
        [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    )


def rescore_artifact(artifact: Path, scorers: dict[str, Scorer]) -> list[dict]:
    """Per evaluation step of `artifact`: the mean of each score over the step's samples (scored step by
    step, as the run scored them), beside the step's logged kl, gold and reward."""
    by_step: dict[int, list[dict]] = defaultdict(list)
    for row in read_jsonl(artifact / EVAL_HISTORY):
        by_step[row["step"]].append(row)
    logged = {row["step"]: row for row in read_jsonl(artifact / EVALS)}
    rows = []
    for step, samples in sorted(by_step.items()):
        prompts, completions = [s["prompt"] for s in samples], [s["completion"] for s in samples]
        evals = logged.get(step, {})
        kl = evals.get("kl")
        row = {
            "step": step,
            "kl": kl,
            "sqrt_kl": None if kl is None else math.sqrt(max(kl, 0.0)),
            "logged_gold": evals.get("gold"),
            "logged_reward": evals.get("reward"),
        }
        with torch.no_grad():
            row |= {name: s.score(prompts, completions).mean().item() for name, s in scorers.items()}
        rows.append(row)
    return rows


def rescore(
    path: Path, scores: list[str], out: Path | None = None, device: str = "cpu", say=print
) -> Rescored:
    """Rescore every run of `path` with each of `scores`; write rescored.csv and rescored.png to `out`.
    `say` gets a message for each run skipped."""
    path = Path(path)
    if not scores:
        raise UserError("no --score given: name a gold of the world or a reward-model folder")
    sources, notes = find_sources(path)
    scorers = build_scorers(scores, device)
    result = Rescored(scores=list(scorers), skipped=notes)
    for source in sources:
        if not (source.artifact / EVAL_HISTORY).is_file():
            result.skipped.append(
                f"{source.artifact}: no {EVAL_HISTORY} (built before it existed), skipped"
                + (f" (run {source.name})" if source.name != source.artifact.name else "")
            )
            continue
        for row in rescore_artifact(source.artifact, scorers):
            result.rows.append({"run": source.name, "configuration": source.configuration} | row)
    for message in result.skipped:
        say(message)
    if not result.rows:
        raise UserError(f"{path}: nothing to rescore (no run below it has {EVAL_HISTORY})")
    if out is None:
        out = Path("rescore") / path.name if is_training_artifact(path) else path / "rescore"
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result.csv = write_csv(result, out / CSV_FILE)
    result.plot = plot(result, out / PLOT_FILE)
    return result


# ------------------------------------------------------------------------------------------ output
def write_csv(result: Rescored, path: Path) -> Path:
    columns = ["run", "configuration", "step", *LOGGED, *result.scores]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in result.rows)
    return path


def by_run(rows: list[dict]) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        runs[row["run"]].append(row)
    return dict(runs)


def _short(name: str) -> str:
    """A score's name for a title: a folder's last two parts."""
    parts = Path(name).parts
    return "/".join(parts[-2:]) if len(parts) > 1 else name


def plot(result: Rescored, path: Path) -> Path:
    """One panel per score, against √KL; one line per run."""
    n = len(result.scores)
    fig, axes = plots.subplots(1, n, figsize=(5 * n, 4), squeeze=False)
    runs = by_run(result.rows)
    for ax, score in zip(axes[0], result.scores, strict=True):
        for i, (name, rows) in enumerate(runs.items()):
            points = [(r["sqrt_kl"], r[score]) for r in rows if r["sqrt_kl"] is not None]
            label = f"{name} ({rows[0]['configuration']})" if rows[0]["configuration"] else name
            ax.plot(
                [x for x, _ in points], [y for _, y in points], "o-", ms=3, color=f"C{i % 10}", label=label
            )
        plots.dress(
            ax, "√KL to the reference  [√nats]", f"mean {_short(score)}", f"{_short(score)} against √KL"
        )
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Held-out samples rescored (one point per evaluation)")
    return plots.save(fig, path)


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def table(result: Rescored) -> str:
    """Markdown, one row per run: its evaluations, the last one's KL and logged gold, and each score at
    the last evaluation with its peak over the run."""
    header = [
        "run",
        "evals",
        "final KL",
        "logged gold",
        *(f"{_short(s)}: final (peak @ step)" for s in result.scores),
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, rows in by_run(result.rows).items():
        last = rows[-1]
        cells = [name, str(len(rows)), _number(last["kl"]), _number(last["logged_gold"])]
        for score in result.scores:
            peak = max(rows, key=lambda r, s=score: r[s])
            cells.append(f"{last[score]:.3f} ({peak[score]:.3f} @ {peak['step']})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="rlhf-lab-rescore", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "path", type=Path, help="an RL or DPO artifact folder, a run folder or a multirun folder"
    )
    parser.add_argument(
        "--score",
        action="append",
        default=[],
        required=True,
        help="a gold of the world (reader, careful, vader) or a reward-model folder or hub id; repeatable",
    )
    parser.add_argument(
        "--out", type=Path, help="where to write (default: <path>/rescore; ./rescore/<name> for an artifact)"
    )
    parser.add_argument("--device", default="cpu", help="where reward models score (default: cpu)")
    args = parser.parse_args(argv)
    try:
        result = rescore(
            args.path, args.score, args.out, args.device, say=lambda m: print(m, file=sys.stderr)
        )
    except UserError as error:  # a wrong path or score: the message is the whole story
        raise SystemExit(f"rlhf-lab-rescore: {error}") from None
    print(table(result))
    print(f"table: {result.csv}\nplot: {result.plot}")


if __name__ == "__main__":
    main()
