"""Artifacts are content-addressed and atomic: an interrupted build never counts as done."""

from __future__ import annotations

import pytest

from rlhf_lab.artifacts import building, config_hash, is_complete, read_manifest
from rlhf_lab.pipeline import artifact_dir, plan, stage_key


def test_config_hash_ignores_key_order_and_sees_values():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_a_finished_build_is_complete_with_its_manifest(tmp_path):
    final = tmp_path / "sft" / "abc"
    with building(final, stage="sft", key="abc") as scratch:
        (scratch / "weights.bin").write_bytes(b"w")
        (scratch / "metrics.json").write_text('{"sft/val/loss": 1.5}')
    assert is_complete(final) and (final / "weights.bin").read_bytes() == b"w"
    manifest = read_manifest(final)
    assert manifest["stage"] == "sft" and manifest["metrics"] == {"sft/val/loss": 1.5}
    assert manifest["versions"]["torch"]
    assert [p.name for p in final.parent.iterdir()] == ["abc"]  # no scratch left behind


@pytest.mark.parametrize("resumable", [False, True])
def test_an_interrupted_build_leaves_nothing_that_counts_as_done(tmp_path, resumable):
    final = tmp_path / "collect" / "abc"
    with pytest.raises(KeyboardInterrupt), building(final, resumable=resumable) as scratch:
        (scratch / "chunk-0.jsonl").write_text("{}\n")
        raise KeyboardInterrupt
    assert not final.exists() and not is_complete(final)
    kept = final.parent / ".abc.partial" / "chunk-0.jsonl"
    assert kept.exists() == resumable  # a resumable stage finds its finished chunks again
    with building(final, resumable=resumable) as scratch:
        assert (scratch / "chunk-0.jsonl").exists() == resumable
    assert is_complete(final)


def test_plan_lists_upstream_stages_first_and_once(make_cfg):
    assert plan(make_cfg(), "bon") == ["pretrain", "sft", "collect", "reward", "bon"]
    assert plan(make_cfg("objective=gold"), "bon") == ["pretrain", "sft", "bon"]
    assert plan(make_cfg("model=hf", "model.name_or_path=some/model"), "sft") == ["sft"]


def test_cache_keys_follow_the_config(make_cfg):
    a = make_cfg("stage=sft")
    b = make_cfg("stage=sft", "sft.lr=1e-4")
    c = make_cfg("stage=sft", "pretrain.lr=1e-4")
    assert stage_key(a, "pretrain") == stage_key(b, "pretrain")  # an sft change keeps pretrain
    assert stage_key(a, "sft") != stage_key(b, "sft")
    assert stage_key(a, "pretrain") != stage_key(c, "pretrain")  # an upstream change
    assert stage_key(a, "sft") != stage_key(c, "sft")  # invalidates downstream
    assert artifact_dir(a, "sft").parent.name == "sft"
