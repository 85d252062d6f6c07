"""People as the judge: a blind comparison of two policies' held-out samples on the labeling page, and
the human win rate of A over B it gives (Stiennon et al. 2020; Ouyang et al. 2022).

    rlhf-lab stage=label label.judge=[<A>,<B>]      # serve the comparison; labels in label.judge_labels
    rlhf-lab-winrate lab/labels/judged.jsonl        # the win rates, from the label file alone

A policy's samples are the ones its run already wrote (nothing is generated): <A> and <B> are each an RL
or DPO artifact folder, or a run folder holding one, whose `eval_history.jsonl` has every held-out
evaluation's prompts and completions; its last evaluation's by default, `<folder>@<step>` for another
(`@0`: the starting policy, SFT, sampled by the same held-out sampler); or a JSONL file of `prompt`,
`completion` (with `step` and `@<step>` as for a history). Both must hold the same prompts. For each
prompt the page shows A's and B's completions in a seeded random order and side (`label.seed`), with
no sign of which policy wrote which; a prompt whose two completions are the same text is not shown.

Before serving, each completion is scored by the gold (`gold`, `scorers.gold_scorer`) and by the proxy
(`label.proxy`, resolved as `gold` is; null: the reward model that trained A or B, when one did), and
the comparison is written as a pairs file (`judge.jsonl` in the run folder); the label file records
with every decision which policy wrote each side and both scores, so the win rates come from it alone
(`rlhf_lab.label.winrate`).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf_lab.artifacts import MANIFEST, read_manifest
from rlhf_lab.config import Config
from rlhf_lab.errors import UserError
from rlhf_lab.evaluation import EVAL_HISTORY, EVAL_SAMPLES
from rlhf_lab.label.records import LabelFileError
from rlhf_lab.label.winrate import comparisons_in, short, to_markdown
from rlhf_lab.report.rescore import build_scorers, find_sources
from rlhf_lab.scorers import Scorer, gold_scorer

log = logging.getLogger(__name__)
PAIRS_FILE = "judge.jsonl"  # the comparison served, in the label run's folder
KEY = "label.judge"


@dataclass
class Samples:
    """One policy's held-out samples: its name in the label file, the file read, the step, the rows."""

    name: str
    path: Path
    step: int | None
    prompts: list[Any]  # as the file holds them: a string, or a conversation's messages
    completions: list[str]
    artifact: Path | None = None  # the RL or DPO artifact, when the samples are one's


# ------------------------------------------------------------------------------------------ reading
def read_samples(spec: str) -> Samples:
    """The samples `spec` names: `<folder or file>[@<step>]`; errors name the file and the field."""
    where, _, step_text = spec.rpartition("@")
    if not where or Path(spec).expanduser().exists():  # no @, or a path with @ in its name
        where, step_text = spec, ""
    step = _step(spec, step_text) if step_text else None
    path = Path(where).expanduser()
    if path.is_dir():
        artifact = _artifact(spec, path)
        file = artifact / EVAL_HISTORY
        if not file.is_file():
            if step is not None:
                raise UserError(f"{KEY}: {spec}: no {EVAL_HISTORY} in {artifact}, so no step to choose")
            file = artifact / EVAL_SAMPLES
        return _from_file(file, step, artifact)
    if path.is_file():
        return _from_file(path, step, None)
    raise UserError(f"{KEY}: {spec}: no such folder or file")


def _step(spec: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UserError(f"{KEY}: {spec}: expected <folder or file>@<step>, with a whole step") from None


def _artifact(spec: str, folder: Path) -> Path:
    """The RL or DPO artifact of `folder` (itself, or the one of a run folder)."""
    if (folder / EVAL_HISTORY).is_file() or (folder / EVAL_SAMPLES).is_file():
        return folder
    try:
        sources, _ = find_sources(folder)
    except UserError:
        sources = []
    if len(sources) == 1:
        return sources[0].artifact
    if len(sources) > 1:
        found = ", ".join(str(s.artifact) for s in sources)
        raise UserError(f"{KEY}: {spec}: a folder with several trained policies ({found}); name one")
    raise UserError(
        f"{KEY}: {spec}: no held-out samples ({EVAL_HISTORY} or {EVAL_SAMPLES}) in this folder or a run "
        "below it; give an RL or DPO artifact or run folder, or a JSONL file of prompt, completion"
    )


def _from_file(path: Path, step: int | None, artifact: Path | None) -> Samples:
    rows = _rows(path)
    steps = sorted({r["step"] for _, r in rows if "step" in r})
    if steps:
        chosen = steps[-1] if step is None else step
        if chosen not in steps:
            raise UserError(f"{path}: field 'step': no evaluation at step {step} (steps {_listed(steps)})")
        rows = [(i, r) for i, r in rows if r.get("step") == chosen]
    elif step is not None:
        raise UserError(f"{path}: field 'step': missing, so @{step} chooses nothing")
    else:
        chosen = None
    for key in ("prompt", "completion"):
        for i, row in rows:
            if key not in row:
                raise UserError(f"{path}: row {i}, field '{key}': missing; expected prompt, completion")
            if key == "completion" and not isinstance(row[key], str):
                raise UserError(f"{path}: row {i}, field 'completion': expected a string")
    name = str((artifact or path).resolve()) + (f"@{chosen}" if chosen is not None else "")
    prompts, completions = [r["prompt"] for _, r in rows], [r["completion"] for _, r in rows]
    return Samples(name, path, chosen, prompts, completions, artifact)


def _rows(path: Path) -> list[tuple[int, dict]]:
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}: row {i}: not a JSON line ({err.msg})") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}: row {i}: expected a JSON object")
        rows.append((i, row))
    if not rows:
        raise UserError(f"{path}: no samples in it")
    return rows


def _listed(steps: list[int]) -> str:
    return ", ".join(map(str, steps)) if len(steps) <= 8 else f"{steps[0]} to {steps[-1]}"


# ------------------------------------------------------------------------------------------ matching
def _key(prompt: Any) -> str:
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)


def match(a: Samples, b: Samples) -> list[tuple[Any, str, str]]:
    """(prompt, A's completion, B's completion) for each prompt, in A's order; the two must hold the
    same prompts (a prompt twice in both pairs by occurrence)."""
    theirs: dict[str, list[str]] = defaultdict(list)
    for prompt, completion in zip(b.prompts, b.completions, strict=True):
        theirs[_key(prompt)].append(completion)
    matched, missing = [], []
    for prompt, completion in zip(a.prompts, a.completions, strict=True):
        others = theirs.get(_key(prompt))
        if others:
            matched.append((prompt, completion, others.pop(0)))
        else:
            missing.append(prompt)
    extra = [key for key, left in theirs.items() for _ in left]
    if missing or extra:
        first = f"{_key(missing[0])[:60]!r} is not in B's" if missing else f"{extra[0][:60]!r} is not in A's"
        raise UserError(
            f"{KEY}: the two policies' samples are not on the same prompts: A ({a.path}, field 'prompt') has "
            f"{len(a.prompts)}, B ({b.path}) has {len(b.prompts)}; {len(missing)} of A's are not in B's and "
            f"{len(extra)} of B's not in A's ({first}); compare samples of the same held-out prompts"
        )
    return matched


# ------------------------------------------------------------------------------------------ scoring
def proxy_scorer(cfg: Config, a: Samples, b: Samples, device: str) -> tuple[str | None, Scorer | None]:
    """(name, scorer) of the proxy: `label.proxy`, else the reward model that trained A or B (the first
    whose manifest names one), else none."""
    name = cfg.label.proxy
    if name is None:
        for samples in (a, b):
            folder = samples.artifact
            if folder is not None and (folder / MANIFEST).is_file():
                name = read_manifest(folder).get("inputs", {}).get("reward")
                if name:
                    break
    if not name:
        return None, None
    return name, build_scorers([name], device)[name]


def scores(scorer: Scorer | None, prompts: list, completions: list[str]) -> list[float | None]:
    if scorer is None:
        return [None] * len(completions)
    return [float(x) for x in scorer.score(prompts, completions).tolist()]


def comparison_rows(a: Samples, b: Samples, gold: Scorer | None, proxy: Scorer | None) -> list[dict]:
    """The pairs file of the comparison: per prompt with two different completions, A's as completion_a
    and B's as completion_b, with both policies' names and their gold and proxy scores."""
    matched = [m for m in match(a, b) if m[1] != m[2]]
    prompts = [p for p, _, _ in matched]
    columns = {}
    for side, index in (("a", 1), ("b", 2)):
        completions = [m[index] for m in matched]
        columns[f"completion_{side}"] = completions
        columns[f"gold_{side}"] = scores(gold, prompts, completions)
        columns[f"proxy_{side}"] = scores(proxy, prompts, completions)
    names = {"policy_a": a.name, "policy_b": b.name}
    return [{"prompt": p} | {k: v[i] for k, v in columns.items()} | names for i, p in enumerate(prompts)]


def comparison_file(cfg: Config, out_dir: Path, device: str = "cpu") -> Path:
    """Read `label.judge`'s two policies' samples, score them, write the pairs to serve; its path."""
    a, b = (read_samples(spec) for spec in cfg.label.judge)
    if a.name == b.name:
        raise UserError(f"{KEY}: A and B are the same samples ({a.name})")
    proxy_name, proxy = proxy_scorer(cfg, a, b, device)
    rows = comparison_rows(a, b, gold_scorer(cfg, device), proxy)
    same = len(a.prompts) - len(rows)
    if not rows:
        raise UserError(f"{KEY}: A and B wrote the same completion for every prompt; nothing to judge")
    path = Path(out_dir) / PAIRS_FILE
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    log.info(
        "judge: A = %s, B = %s: %d prompts to judge (%d with the same completion left out); gold %s, "
        "proxy %s; pairs in %s",
        short(a.name),
        short(b.name),
        len(rows),
        same,
        cfg.gold,
        proxy_name,
        path,
    )
    return path


# ----------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="rlhf-lab-winrate",
        description="The human win rate of each blind comparison in a label file (label.judge), with its 95%"
        " Wilson interval, beside the gold's and the proxy's on the same prompts.",
    )
    parser.add_argument("labels", type=Path, help="the label file (label.judge_labels)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    try:
        rows = comparisons_in(args.labels)
    except (UserError, LabelFileError) as error:
        raise SystemExit(f"rlhf-lab-winrate: {error}") from None
    print(json.dumps(rows, indent=2) if args.json else to_markdown(rows), end="")


if __name__ == "__main__":
    main()
