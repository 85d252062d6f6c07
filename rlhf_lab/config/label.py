"""The settings of `stage=label`, the labeling page (rlhf_lab/label/): what it serves, where its
decisions go, who may reach it, and how pairs are shared among annotators."""

from __future__ import annotations

from dataclasses import dataclass

from rlhf_lab.config.fields import setting

GUIDELINE = (
    "Read the prompt, then both completions. Choose the completion that is the better continuation: "
    "a fluent, well-formed review that stays on the prompt's topic. Choose tie when neither is better, "
    "skip when you cannot judge the pair (someone else will get it)."
)


@dataclass
class LabelConfig:
    pairs: str | None = setting(
        None,
        "what to label: a collect artifact folder, or a JSONL/CSV/Parquet file of prompt and "
        "completion_a/completion_b (or chosen/rejected; gold_a/gold_b optional); null = the collect "
        "artifact of this config (built first if missing)",
    )
    labels: str = setting(
        "${paths.root}/labels/labels.jsonl",
        "the append-only JSONL file of decisions, each fsynced before the page moves on; "
        "labeler=file reads it as it is (labeler.path=<this file>)",
    )
    host: str = setting(
        "127.0.0.1", "address to listen on; any but a loopback address requires an access token"
    )
    port: int = setting(8765, "port to listen on; 0 = any free port (printed at start)", ge=0, le=65535)
    token: str | None = setting(
        None,
        "access token; null = none on a loopback address, else one generated and printed at start; "
        "set = always required (?token=, a cookie, or Authorization: Bearer)",
    )
    guideline: str = setting(GUIDELINE, "the labeling guideline shown above the pairs")
    overlap: float = setting(
        0.0,
        "share of the pairs that overlap_annotators annotators each label (for agreement); the rest "
        "go to one annotator each",
        ge=0,
        le=1,
    )
    overlap_annotators: int = setting(2, "annotators per overlapped pair", ge=2)
    claim_minutes: float = setting(
        30.0,
        "a pair shown to an annotator is kept for them this long; after that, or after a restart, "
        "another annotator may get it",
        gt=0,
    )
    seed: int | None = setting(
        None, "seed of the pairs' order, of which completion is shown left, and of the overlap; null = `seed`"
    )
    judge: list[str] = setting(
        [],
        "a blind comparison instead of pairs: [A, B], each an RL or DPO artifact or run folder (its last "
        "held-out evaluation's samples; <folder>@<step> another's, @0 the starting policy's) or a JSONL "
        "file of prompt, completion; people judge A's against B's completion per prompt, and the human "
        "win rate of A over B is reported (rlhf-lab-winrate)",
    )
    judge_labels: str = setting(
        "${paths.root}/labels/judged.jsonl",
        "label.judge's label file (label.labels holds the pairs' labels); every comparison judged in "
        "it gets its own row of win rates",
    )
    proxy: str | None = setting(
        None,
        "label.judge: the proxy whose win rate is reported beside the people's and the gold's, resolved "
        "as `gold` is (a gold's name, a reward-model folder or hub id); null = the reward model that "
        "trained A or B, else none",
    )


def label_problems(label: LabelConfig, pipeline: list[str]):
    """Yield 'key: message' for a run that cannot serve the labeling page."""
    if "label" in pipeline:
        yield "pipeline: label serves a page until it is stopped; run it alone (rlhf-lab stage=label)"
    if label.judge and len(label.judge) != 2:
        yield f"label.judge: expected two policies' samples, [A, B], got {len(label.judge)}"
    if label.judge and label.pairs is not None:
        yield "label.judge: a blind comparison serves its own pairs; unset label.pairs"
