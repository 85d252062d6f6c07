"""Reward models of any size (Gao et al. 2022's proxy-size axis; Stiennon et al. 2020): the tiny world's
model at named sizes, each pretrained once on the world's corpus and cached, as the reward model's
backbone; or any HF causal LM with its own tokenizer. The default backbone, the policy's, keeps its key."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, LlamaForSequenceClassification

from rlhf_lab.artifacts import read_manifest
from rlhf_lab.config import ConfigError, TinyModelConfig, WorldConfig, validate
from rlhf_lab.pipeline import STAGES, check, ensure, stage_key
from rlhf_lab.scorers import RewardModelScorer
from rlhf_lab.seeds import without_seed
from rlhf_lab.stages.common import sized
from rlhf_lab.world.corpus import generate_documents
from rlhf_lab.world.model import build_tiny_llama, parameter_count
from rlhf_lab.world.tokenizer import train_tokenizer
from tests.helpers import SMALL, compose_config, saved_weights

REWARD = STAGES["reward"]


def test_named_sizes_span_thirty_fold_in_parameters(world):
    vocab = WorldConfig().vocab_size
    counts = {name: parameter_count(arch, vocab) for name, arch in WorldConfig().sizes.items()}
    assert counts == {"xs": 77_920, "s": 229_696, "m": 1_049_728, "l": 3_672_320}  # docs/world.md
    assert counts["l"] >= 30 * counts["xs"]
    cfg, built = world
    tokenizer = AutoTokenizer.from_pretrained(built.init_model)
    for arch in cfg.world.sizes.values():  # the count is that of the model the pretrain stage starts from
        model = build_tiny_llama(arch, tokenizer, seed=0)
        assert sum(p.numel() for p in model.parameters()) == parameter_count(arch, len(tokenizer))


def test_the_default_backbone_keeps_the_reward_key(make_cfg):
    cfg = make_cfg("stage=reward")
    train = REWARD.key_config(cfg)["train"]
    before = {k: v for k, v in without_seed(cfg.reward_model).items() if k != "backbone"}
    assert train == before  # the settings of the reward stage as they were before `backbone` existed
    assert REWARD.upstream(cfg) == ["collect", "sft"] and REWARD.derived(cfg) == {}
    assert stage_key(make_cfg("reward_model.backbone=policy"), "reward") == stage_key(cfg, "reward")


def test_a_size_is_pretrained_under_a_key_of_its_own_architecture(make_cfg):
    cfg = make_cfg("stage=reward", "reward_model.backbone=xs")
    (backbone,) = REWARD.derived(cfg).values()
    assert backbone.stage == "pretrain" and backbone.cfg.model.size == "xs"
    assert REWARD.upstream(cfg) == ["collect"]  # no policy backbone
    policy, xs = stage_key(cfg, "pretrain"), stage_key(backbone.cfg, "pretrain")
    assert len({policy, xs, stage_key(sized(cfg, "s"), "pretrain")}) == 3
    wider = make_cfg("stage=reward", "reward_model.backbone=xs", "world.sizes.xs.hidden_size=48")
    assert stage_key(sized(wider, "xs"), "pretrain") != xs  # the key holds the size's architecture
    assert stage_key(wider, "reward") != stage_key(cfg, "reward")
    assert stage_key(wider, "pretrain") == policy  # neither the world nor the policy's pretraining moved
    assert stage_key(sized(wider, "s"), "pretrain") == stage_key(sized(cfg, "s"), "pretrain")
    assert stage_key(cfg, "reward") != stage_key(make_cfg("stage=reward"), "reward")


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["reward_model.backbone=xs", "world.sizes.xs.num_heads=3"], "world.sizes.xs: num_kv_heads"),
        (["reward_model.backbone=s", "world.sizes.s.max_position_embeddings=32"], "world.sizes.s.max_pos"),
        (["reward_model.backbone=./no/such/folder"], "reward_model.backbone"),
        (["model.size=xxl"], "model.size"),
    ],
)
def test_bad_sizes_and_backbones_are_refused_before_anything_is_built(make_cfg, overrides, key):
    with pytest.raises(ConfigError, match=key):
        check(make_cfg("stage=reward", *overrides), "reward")


# ------------------------------------------------------------------------------ trained (slow)
def xs_reward(*overrides: str):
    """A short reward run on the `xs` backbone, on SMALL's collected pairs."""
    steps = ("reward_model.max_steps=2", "reward_model.warmup_steps=0")
    return validate(compose_config(*SMALL, "stage=reward", "reward_model.backbone=xs", *steps, *overrides))


@pytest.mark.slow
def test_a_reward_model_on_a_named_size_starts_from_that_size_pretrained(tmp_path):
    cfg = xs_reward("reward_model.lr=1e-30")  # a vanishing step: the exported weights are the start
    out = ensure(cfg, "reward", tmp_path)
    backbone = read_manifest(out)["inputs"]["backbone"]
    arch = cfg.world.sizes["xs"]
    assert read_manifest(backbone)["stage"] == "pretrain"
    assert read_manifest(backbone)["config"]["model"]["size"] == arch.__dict__
    model = LlamaForSequenceClassification.from_pretrained(out)
    assert (model.config.hidden_size, model.config.num_hidden_layers) == (32, 1)
    pretrained, reward = saved_weights(backbone), saved_weights(out)
    assert set(reward) == set(pretrained) | {"score.weight"}
    assert all(torch.equal(reward[k], pretrained[k]) for k in pretrained)
    params = read_manifest(out)["metrics"]["reward/params"]
    assert params == parameter_count(arch, model.config.vocab_size) + arch.hidden_size  # + the head
    assert (tmp_path / "backbone" / "pretrain").is_dir()  # the size's pretraining logs, apart


@pytest.mark.slow
def test_a_size_is_pretrained_once_and_reused_by_another_seed(tmp_path, caplog):
    first = ensure(xs_reward(), "reward", tmp_path / "a")
    backbone = read_manifest(first)["inputs"]["backbone"]
    weights = Path(backbone) / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="rlhf_lab.pipeline"):
        second = ensure(xs_reward("reward_model.seed=1"), "reward", tmp_path / "b")
    assert second != first and read_manifest(second)["inputs"]["backbone"] == backbone
    assert f"pretrain: reusing artifact {backbone}" in caplog.text
    assert weights.stat().st_mtime_ns == stamp  # built once


@pytest.mark.slow
def test_a_reward_model_on_an_hf_model_keeps_its_own_tokenizer(tmp_path):
    tokenizer = train_tokenizer(generate_documents(300, seed=1), 300)  # not the world's tokenizer
    arch = TinyModelConfig(hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=32)
    folder = tmp_path / "hf"
    build_tiny_llama(arch, tokenizer, seed=0).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    cfg = validate(
        compose_config(*SMALL, "stage=reward", f"reward_model.backbone={folder}", "reward_model.max_steps=2")
    )
    out = ensure(cfg, "reward", tmp_path / "run")
    assert set(read_manifest(out)["inputs"]) == {"collect"}
    assert AutoTokenizer.from_pretrained(out).get_vocab() == tokenizer.get_vocab()
    assert read_manifest(out)["metrics"]["reward/params"] == parameter_count(arch, len(tokenizer)) + 16
    scores = RewardModelScorer(out).score(["The film"], [" was great."])  # re-tokenized with its own
    assert scores.shape == (1,) and torch.isfinite(scores).all()
