"""Stage `collect`: samples of the SFT policy per prompt, candidate pairs, labels, the preference
files in TRL's format, and chunks that survive an interruption."""

from __future__ import annotations

import itertools
import json

import datasets
import pytest
import torch

from rlhf_lab.artifacts import read_manifest
from rlhf_lab.comparisons import candidate_pairs
from rlhf_lab.labelers import bt_ceiling
from rlhf_lab.pipeline import ensure
from rlhf_lab.stages.collect import sample_in_chunks
from rlhf_lab.stages.common import Context
from tests.helpers import SMALL


def test_candidate_pairs():
    assert candidate_pairs(4, "all") == list(itertools.combinations(range(4), 2))
    assert candidate_pairs(4, "adjacent") == [(0, 1), (1, 2), (2, 3)]


@pytest.mark.slow
def test_collect_writes_trl_preferences_with_gold_columns(reward_run):
    cfg, rm_dir, _ = reward_run
    collect_dir = read_manifest(rm_dir)["inputs"]["collect"]
    rows = [json.loads(line) for line in open(f"{collect_dir}/preferences.jsonl")]
    assert rows and {
        "prompt",
        "chosen",
        "rejected",
        "gold_chosen",
        "gold_rejected",
        "labeler",
        "policy",
    } <= set(rows[0])
    assert len(rows) <= 48 * 3  # at most K(K-1)/2 = 3 pairs per prompt
    assert all(r["chosen"] != r["rejected"] and r["chosen"].strip() and r["rejected"].strip() for r in rows)
    on_disk = datasets.load_from_disk(f"{collect_dir}/preferences")
    assert on_disk.num_rows == len(rows) and on_disk[0]["chosen"] == rows[0]["chosen"]
    metrics = read_manifest(collect_dir)["metrics"]
    assert metrics["collect/bt_temperature"] == 0.2 and metrics["collect/unlabelled"] == 0  # bt labels all
    gold_chosen, gold_rejected = (
        torch.tensor([r[k] for r in rows]) for k in ("gold_chosen", "gold_rejected")
    )
    assert metrics["collect/bt_ceiling"] == pytest.approx(bt_ceiling(gold_chosen, gold_rejected, 0.2))


@pytest.mark.slow
def test_argmax_labels_agree_with_gold(make_cfg, tmp_path):
    cfg = make_cfg(*SMALL, "labeler=argmax", "collect.pairs=adjacent")
    out = ensure(cfg, "collect", tmp_path)
    rows = [json.loads(line) for line in (out / "preferences.jsonl").open()]
    assert rows and all(r["gold_chosen"] > r["gold_rejected"] for r in rows)
    assert read_manifest(out)["metrics"]["collect/gold_agreement"] == 1.0


@pytest.mark.slow
def test_collect_resumes_finished_chunks_and_matches_an_uninterrupted_run(make_cfg, tmp_path, reward_run):
    cfg = make_cfg(*SMALL)
    ctx = Context(cfg, tmp_path, inputs={"sft": ensure(cfg, "sft", tmp_path)})
    prompts = [f"The film number {i} was" for i in range(40)]
    full = sample_in_chunks(ctx, str(ctx.inputs["sft"]), prompts, tmp_path / "full")
    partial_dir = tmp_path / "resumed"
    sample_in_chunks(ctx, str(ctx.inputs["sft"]), prompts[:16], partial_dir)  # "interrupted" after chunk 0
    stamp = (partial_dir / "00000.jsonl").stat().st_mtime_ns
    resumed = sample_in_chunks(ctx, str(ctx.inputs["sft"]), prompts, partial_dir)
    assert (partial_dir / "00000.jsonl").stat().st_mtime_ns == stamp  # not redone
    assert resumed == full
