"""The tiny world: deterministic tokenizer, a loadable tiny Llama, built once and reused."""

from __future__ import annotations

import json

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from rlhf_lab.config import TinyModelConfig, WorldConfig
from rlhf_lab.world import build_world, world_key
from rlhf_lab.world.corpus import generate_documents
from rlhf_lab.world.model import build_tiny_llama
from rlhf_lab.world.tokenizer import train_tokenizer

SMALL = WorldConfig(
    n_documents=600,
    vocab_size=400,
    eval_prompts=16,
    model=TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64),
)


def test_tokenizer_is_deterministic_and_has_distinct_special_tokens():
    docs = generate_documents(500, seed=0)
    a, b = train_tokenizer(docs, 400), train_tokenizer(docs, 400)
    assert a.get_vocab() == b.get_vocab()
    assert train_tokenizer(generate_documents(500, seed=1), 400).get_vocab() != a.get_vocab()
    assert len({a.pad_token_id, a.bos_token_id, a.eos_token_id}) == 3
    ids = a("The film was great.")["input_ids"]
    assert ids[0] == a.bos_token_id and a.eos_token_id not in ids
    assert a.decode(ids, skip_special_tokens=True) == "The film was great."


def test_default_tiny_llama_is_between_2_and_10_million_parameters():
    tokenizer = train_tokenizer(generate_documents(300, seed=0), 2048)
    model = build_tiny_llama(TinyModelConfig(), tokenizer, seed=0)
    assert 2e6 <= sum(p.numel() for p in model.parameters()) <= 10e6


def test_world_is_built_once_and_loads_through_from_pretrained(tmp_path):
    world = build_world(SMALL, tmp_path)
    assert world.root.name == world_key(SMALL)
    stamp = world.corpus.stat().st_mtime_ns
    assert build_world(SMALL, tmp_path).corpus.stat().st_mtime_ns == stamp  # reused, not rebuilt
    model = AutoModelForCausalLM.from_pretrained(world.init_model)
    tokenizer = AutoTokenizer.from_pretrained(world.init_model)
    assert isinstance(model, LlamaForCausalLM) and model.config.vocab_size == len(tokenizer)
    assert model.config.pad_token_id == tokenizer.pad_token_id != tokenizer.eos_token_id
    sft = [json.loads(line) for line in world.sft.read_text().splitlines()]
    assert all(set(r) == {"prompt", "completion"} and r["completion"].startswith(" ") for r in sft)
    assert len(world.eval_prompts.read_text().splitlines()) == 16
    corpus_docs = {json.loads(line)["text"] for line in world.corpus.read_text().splitlines()}
    assert not corpus_docs & {r["prompt"] + r["completion"] for r in sft}  # disjoint splits


def test_a_changed_world_config_is_a_new_world(tmp_path):
    other = WorldConfig(**{**SMALL.__dict__, "seed": 1})
    assert world_key(other) != world_key(SMALL)
    assert build_world(other, tmp_path).root != build_world(SMALL, tmp_path).root


@pytest.mark.parametrize("field", ["n_documents", "vocab_size"])
def test_world_key_tracks_every_field(field):
    changed = WorldConfig(**{**SMALL.__dict__, field: getattr(SMALL, field) + 1})
    assert world_key(changed) != world_key(SMALL)
