"""The run viewer: one prompt's completions across a run's evaluation steps, in one HTML file.

    python -m rlhf_lab.report.viewer <path> [--gold NAME] [--out FILE]
    rlhf-lab-view lab/artifacts/rl/<hash>            # writes ./viewer-<hash>.html; open it in a browser

<path> is an RL or DPO artifact folder (its `eval_history.jsonl` holds every held-out evaluation's
prompts and completions, its `eval.jsonl` each evaluation's logged KL, gold and proxy), a run folder or a
multirun folder (a run selector on the page). Each completion is scored by the gold the run trained with
(its manifest's `gold`, through `scorers.gold_scorer`; `--gold` another, resolved as the `gold` setting
is), step by step as the run scored them, so a step's mean gold is the run's logged gold. The page
(`rlhf_lab.label.viewer`) lists the prompts, shows the chosen one's completion at every step with the
step's KL and proxy and the completion's gold, marks the words new since the step before, and narrows by
a search and a gold range.

Writes FILE (default `<path>/viewer.html` for a run or multirun folder, `./viewer-<name>.html` for an
artifact folder, which stays as it was built).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from rlhf_lab.artifacts import MANIFEST, read_manifest
from rlhf_lab.data.chat import display
from rlhf_lab.errors import UserError
from rlhf_lab.evaluation import EVAL_HISTORY, EVALS
from rlhf_lab.label import viewer
from rlhf_lab.report.rescore import Source, build_scorers, find_sources, is_training_artifact, read_jsonl
from rlhf_lab.scorers import Scorer

PAGE = "viewer.html"
LOGGED = ("kl", "gold", "reward")  # each step's means, from eval.jsonl


def trained_gold(artifact: Path, given: str | None) -> str | None:
    """The gold to score with: `given`, else the one the run trained with (its manifest's `gold`)."""
    if given is not None:
        return given or None
    if not (artifact / MANIFEST).is_file():
        raise UserError(f"{artifact}: no {MANIFEST} to say which gold the run trained with; give --gold")
    return read_manifest(artifact)["config"].get("gold")


def prompt_text(prompt: Any) -> str:
    """A prompt as the page shows it: a conversation as `data.chat.display` writes it."""
    return prompt if isinstance(prompt, str) else display(prompt)


def run_data(source: Source, gold_name: str | None, gold: Scorer | None) -> dict[str, Any]:
    """The viewer's data of one run: its logged steps and, per prompt, its sample at every step."""
    history = read_jsonl(source.artifact / EVAL_HISTORY)
    if not history:
        raise UserError(f"{source.artifact}: no {EVAL_HISTORY} (built before it existed, or empty)")
    by_step: dict[int, list[dict]] = defaultdict(list)
    for row in history:
        by_step[row["step"]].append(row)
    logged = {row["step"]: row for row in read_jsonl(source.artifact / EVALS)}
    prompts: dict[int, dict[str, Any]] = {}
    for step, rows in sorted(by_step.items()):
        golds = _scores(gold, rows)
        for i, (row, value) in enumerate(zip(rows, golds, strict=True)):
            entry = prompts.setdefault(i, {"prompt": prompt_text(row["prompt"]), "samples": []})
            if entry["prompt"] != prompt_text(row["prompt"]):
                raise UserError(
                    f"{source.artifact / EVAL_HISTORY}: step {step}, field 'prompt': its sample {i} is on "
                    "another prompt than at the first step (every evaluation samples the same prompts)"
                )
            entry["samples"].append({"step": step, "completion": row["completion"], "gold": value})
    steps = [{"step": s} | {k: logged.get(s, {}).get(k) for k in LOGGED} for s in sorted(by_step)]
    name = source.name + (f" ({source.configuration})" if source.configuration else "")
    return {"name": name, "gold": gold_name, "steps": steps, "prompts": list(prompts.values())}


def _scores(gold: Scorer | None, rows: list[dict]) -> list[float | None]:
    """Each row's gold, scored together as the run scored its evaluation (one call per step)."""
    if gold is None:
        return [None] * len(rows)
    with torch.no_grad():
        values = gold.score([r["prompt"] for r in rows], [r["completion"] for r in rows])
    return [float(v) for v in values.tolist()]


def view(path: Path, out: Path | None = None, gold: str | None = None, device: str = "cpu") -> Path:
    """Write the viewer page of every run of `path`; its path."""
    path = Path(path)
    sources, _ = find_sources(path)
    sources = [s for s in sources if (s.artifact / EVAL_HISTORY).is_file()]
    if not sources:
        raise UserError(f"{path}: no run below it has {EVAL_HISTORY} (held-out samples per evaluation)")
    runs, scorers = [], {}
    for source in sources:
        name = trained_gold(source.artifact, gold)
        if name and name not in scorers:
            scorers |= build_scorers([name], device)
        runs.append(run_data(source, name, scorers.get(name)))
    if out is None:
        out = Path(f"viewer-{path.name}.html") if is_training_artifact(path) else path / PAGE
    return viewer.write({"title": f"run viewer: {path.name}", "runs": runs}, out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="rlhf-lab-view", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="an RL or DPO artifact, a run or a multirun folder")
    parser.add_argument("--gold", help="score with this gold (a name or reward-model folder), not the run's")
    parser.add_argument("--out", type=Path, help="the page to write")
    parser.add_argument("--device", default="cpu", help="where a reward-model gold scores (default: cpu)")
    args = parser.parse_args(argv)
    try:
        page = view(args.path, args.out, args.gold, args.device)
    except UserError as error:
        raise SystemExit(f"rlhf-lab-view: {error}") from None
    print(f"viewer: {page}")


if __name__ == "__main__":
    main()
