"""Artifacts are content-addressed and atomic: an interrupted build never counts as done."""

from __future__ import annotations

import json

import pytest

from rlhf_lab.artifacts import building, config_hash, is_complete, read_manifest
from rlhf_lab.pipeline import artifact_dir, plan, stage_key
from rlhf_lab.seeds import stage_seed


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


# ------------------------------------------------------------------------------- seeds per stage
ALL = ["pretrain", "sft", "collect", "reward", "rl", "bon", "eval"]


def keys(cfg) -> dict[str, str]:
    return {name: stage_key(cfg, name) for name in ALL}


def changed(a, b) -> list[str]:
    return [name for name in ALL if a[name] != b[name]]


def test_stage_seed_is_its_own_or_the_runs(make_cfg):
    cfg = make_cfg("seed=7", "collect.seed=1", "reward_model.seed=2", "rl.seed=3", "bon.seed=4")
    seeds = {name: stage_seed(cfg, name) for name in ALL}
    assert seeds == {"pretrain": 7, "sft": 7, "collect": 1, "reward": 2, "rl": 3, "bon": 4, "eval": 3}
    assert {stage_seed(make_cfg("seed=7"), name) for name in ALL} == {7}  # null: the run's seed


def test_a_stage_seed_changes_only_that_stage_and_what_reads_it(make_cfg):
    base = keys(make_cfg())
    # rl.seed=0,1,2 trains one SFT policy and one reward model (eval draws RL's held-out samples)
    assert changed(base, keys(make_cfg("rl.seed=1"))) == ["rl", "eval"]
    assert changed(keys(make_cfg("rl.seed=1")), keys(make_cfg("rl.seed=2"))) == ["rl", "eval"]
    # a reward-model seed sweep reuses one set of pairs
    assert changed(base, keys(make_cfg("reward_model.seed=1"))) == ["reward", "rl", "bon", "eval"]
    assert changed(base, keys(make_cfg("collect.seed=1"))) == ["collect", "reward", "rl", "bon", "eval"]
    assert changed(base, keys(make_cfg("bon.seed=1"))) == ["bon", "eval"]
    assert changed(base, keys(make_cfg("seed=1"))) == ALL  # the run's seed is every stage's default


def test_a_null_stage_seed_is_the_runs_seed_key_wise(make_cfg):
    assert keys(make_cfg("seed=3")) == keys(
        make_cfg("seed=3", "collect.seed=3", "reward_model.seed=3", "rl.seed=3", "bon.seed=3")
    )
    assert keys(make_cfg()) == keys(make_cfg("rl.seed=0", "reward_model.seed=0"))
    # a stage's own seed decouples it from the run's: only the stages on the run's seed move
    pinned = ("collect.seed=0", "reward_model.seed=0", "rl.seed=0", "bon.seed=0")
    assert changed(keys(make_cfg(*pinned)), keys(make_cfg("seed=1", *pinned))) == ALL  # inputs moved
    assert stage_seed(make_cfg("seed=1", *pinned), "rl") == 0


def test_a_build_seeds_everything_with_its_stage_seed(make_cfg, monkeypatch, tmp_path):
    import rlhf_lab.pipeline as pipeline
    from rlhf_lab.stages.contract import Stage

    seeded = []
    monkeypatch.setattr(pipeline.L, "seed_everything", lambda seed, **kw: seeded.append(seed))
    for name in ("collect", "reward", "rl", "bon", "eval", "sft"):
        fake = Stage(name, 1, upstream=lambda cfg: [], key_config=lambda cfg: {}, build=lambda ctx, out: {})
        monkeypatch.setitem(pipeline.STAGES, name, fake)
    cfg = make_cfg("seed=9", "collect.seed=1", "reward_model.seed=2", "rl.seed=3", "bon.seed=4")
    for name in ("collect", "reward", "rl", "bon", "eval", "sft"):
        pipeline._build(cfg, name, tmp_path / name / "key", tmp_path / "run", {})
    assert seeded == [1, 2, 3, 4, 3, 9]


# ------------------------------------------------------------------------------ the cache knows the code
def test_every_stage_has_an_integer_version_in_its_key(make_cfg, monkeypatch):
    import dataclasses

    import rlhf_lab.pipeline as pipeline

    assert all(isinstance(stage.version, int) for stage in pipeline.STAGES.values())
    cfg = make_cfg()
    before = keys(cfg)
    reward = pipeline.STAGES["reward"]
    monkeypatch.setitem(pipeline.STAGES, "reward", dataclasses.replace(reward, version=reward.version + 1))
    assert changed(before, keys(cfg)) == ["reward", "rl", "bon", "eval"]  # it and what reads it


def test_the_manifest_records_the_commit_and_a_reuse_across_commits_says_so(
    make_cfg, monkeypatch, tmp_path, caplog
):
    import logging

    import rlhf_lab.pipeline as pipeline
    from rlhf_lab.artifacts import MANIFEST, code_commit

    cfg = make_cfg(f"paths.artifacts={tmp_path}")
    out = artifact_dir(cfg, "pretrain")
    with building(out, stage="pretrain") as scratch:
        (scratch / "weights.bin").write_bytes(b"w")
    manifest = read_manifest(out)
    assert manifest["commit"] == code_commit() and "commit" in manifest

    monkeypatch.setattr(pipeline, "code_commit", lambda: "fedcba9876543210fedcba9876543210fedcba98")
    manifest["commit"] = "0123456789abcdef0123456789abcdef01234567-dirty"
    (out / MANIFEST).write_text(json.dumps(manifest))
    with caplog.at_level(logging.INFO, logger="rlhf_lab.pipeline"):
        assert pipeline.ensure(cfg, "pretrain", tmp_path / "run") == out
    (line,) = [r.getMessage() for r in caplog.records if "reusing" in r.getMessage()]
    assert line == f"pretrain: reusing artifact {out} built at commit 0123456-dirty, this is fedcba9"

    caplog.clear()
    manifest["commit"] = "fedcba9876543210fedcba9876543210fedcba98"  # the same commit: the plain line
    (out / MANIFEST).write_text(json.dumps(manifest))
    with caplog.at_level(logging.INFO, logger="rlhf_lab.pipeline"):
        pipeline.ensure(cfg, "pretrain", tmp_path / "run")
    assert [r.getMessage() for r in caplog.records if "reusing" in r.getMessage()] == [
        f"pretrain: reusing artifact {out}"
    ]
