"""Stages `pretrain` and `sft` on a small tiny world: parameters change, the loss falls, exports
(full, LoRA adapter or merged) reload, and LoRA wraps only what it should."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from rlhf_lab.artifacts import read_manifest
from rlhf_lab.pipeline import ensure
from tests.helpers import compose_config, saved_weights, train_losses


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """The pretrain artifact of the fast config and the run directory that built it."""
    from rlhf_lab.config import validate

    cfg = validate(compose_config())
    run_dir = tmp_path_factory.mktemp("run")
    return cfg, ensure(cfg, "pretrain", run_dir, rebuild=True), run_dir  # trained here, not reused


@pytest.mark.slow
def test_pretrain_changes_weights_and_lowers_the_loss(pretrained):
    cfg, out, run_dir = pretrained
    from rlhf_lab.stages.common import Context

    init = saved_weights(Context(cfg, run_dir).world.init_model)
    trained = saved_weights(out)
    assert init.keys() == trained.keys()
    assert all(not torch.equal(init[k], trained[k]) for k in init)
    losses = train_losses(run_dir, "pretrain")
    assert losses[-1] < losses[0] - 0.5
    metrics = read_manifest(out)["metrics"]
    assert metrics["pretrain/val/ppl"] < 512 / 2  # far better than uniform over the vocabulary
    assert {"pretrain/eval/gold_mean", "pretrain/eval/gold_std"} <= set(metrics)  # gold of 16 samples
    samples = [json.loads(line) for line in (run_dir / "pretrain" / "samples.jsonl").read_text().splitlines()]
    assert samples and all(s["completion"] is not None for s in samples)


@pytest.mark.slow
def test_sft_full_trains_from_the_pretrain_artifact_and_reloads(pretrained, make_cfg, tmp_path):
    cfg = make_cfg("stage=sft")
    out = ensure(cfg, "sft", tmp_path, rebuild=True)
    assert read_manifest(out)["inputs"]["pretrain"] == str(pretrained[1])  # pretrained once, reused
    losses = train_losses(tmp_path, "sft")
    assert losses[-1] < losses[0]
    base, tuned = saved_weights(pretrained[1]), saved_weights(out)
    assert any(not torch.equal(base[k], tuned[k]) for k in base)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert sum(p.numel() for p in model.parameters()) == sum(v.numel() for v in tuned.values())


@pytest.mark.slow
@pytest.mark.parametrize("save", ["adapter", "merged"])
def test_sft_lora_exports_a_reloadable_folder(pretrained, make_cfg, tmp_path, save):
    cfg = make_cfg("stage=sft", "peft=lora", "peft.r=4", "peft.alpha=8", f"peft.save={save}", "sft.lr=5e-3")
    out = ensure(cfg, "sft", tmp_path)
    base_dir = pretrained[1]
    ids = torch.tensor([[1, 40, 41, 42, 43]])
    base_logits = AutoModelForCausalLM.from_pretrained(base_dir)(ids).logits
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    assert not torch.allclose(reloaded(ids).logits, base_logits, atol=1e-4)  # the adapter did something
    if save == "adapter":
        assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
        peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), out)
        torch.testing.assert_close(peft_model(ids).logits, reloaded(ids).logits)
    else:
        assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()


def test_lora_trains_only_the_adapter(world, make_cfg):
    from rlhf_lab.models import apply_peft, load_causal_lm, load_tokenizer

    cfg = make_cfg("peft=lora", "peft.r=2")
    folder = world[1].init_model  # the tiny world's model, as pretraining starts from it
    tokenizer = load_tokenizer(folder, cfg.model)
    model = apply_peft(load_causal_lm(folder, cfg.model, tokenizer), cfg.peft)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


@pytest.mark.slow
def test_trained_model_generates_the_same_greedy_text_batched_or_alone(pretrained):
    """Left padding with correct positions and BOS: batching must not change a single token."""
    from rlhf_lab.config import SourceConfig
    from rlhf_lab.data.sources import load_source
    from rlhf_lab.models import load_causal_lm, load_tokenizer
    from rlhf_lab.rollout import generate_text
    from rlhf_lab.stages.common import Context

    cfg, out, run_dir = pretrained
    prompts = [r["prompt"] for r in load_source(SourceConfig(), Context(cfg, run_dir).world.eval_prompts)[0]][
        :8
    ]
    assert len({len(p.split()) for p in prompts}) > 1  # prompts of different lengths
    tokenizer = load_tokenizer(out, cfg.model)
    model = load_causal_lm(out, cfg.model, tokenizer)
    batched = generate_text(model, tokenizer, prompts, max_new_tokens=16, do_sample=False)
    alone = [generate_text(model, tokenizer, [p], max_new_tokens=16, do_sample=False)[0] for p in prompts]
    assert batched == alone


@pytest.mark.slow
def test_sft_from_a_local_hf_model_without_a_pad_token(make_cfg, tmp_path):
    """model=hf takes any HF folder through from_pretrained; a tokenizer without pad gets its own pad."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from rlhf_lab.world.corpus import generate_documents
    from rlhf_lab.world.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(generate_documents(300, seed=3), vocab_size=300)
    tokenizer.pad_token = None
    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tokenizer),
            n_embd=32,
            n_layer=1,
            n_head=2,
            n_positions=128,
            bos_token_id=1,
            eos_token_id=2,
        )
    )
    model.save_pretrained(tmp_path / "gpt2ish")
    tokenizer.save_pretrained(tmp_path / "gpt2ish")
    cfg = make_cfg(
        "stage=sft",
        "model=hf",
        f"model.name_or_path={tmp_path / 'gpt2ish'}",
        "model.dtype=float32",
        "data.on_bad_row=skip",
    )
    out = ensure(cfg, "sft", tmp_path / "run")
    reloaded_tokenizer = AutoTokenizer.from_pretrained(out)
    assert reloaded_tokenizer.pad_token == "<|pad|>" != reloaded_tokenizer.eos_token
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    assert reloaded.get_input_embeddings().num_embeddings == len(reloaded_tokenizer) == len(tokenizer) + 1
    assert "pretrain" not in read_manifest(out)["inputs"]  # a named model needs no tiny-world pretraining


def test_a_lora_target_the_model_lacks_is_named(world):
    from rlhf_lab.config import ModelConfig, PeftConfig
    from rlhf_lab.models import apply_peft, load_causal_lm, load_tokenizer

    out = world[1].init_model
    model = load_causal_lm(out, ModelConfig(), load_tokenizer(out, ModelConfig()))
    with pytest.raises(ValueError, match=r"\['not_a_layer'\] are not layers of this model"):
        apply_peft(model, PeftConfig(method="lora", target_modules=["q_proj", "not_a_layer"]))
