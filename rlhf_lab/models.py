"""Loading, adapting and exporting Hugging Face causal LMs; the same path for the tiny world and the hub."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from rlhf_lab.config import ModelConfig, PeftConfig

log = logging.getLogger(__name__)
PAD_TOKEN = "<|pad|>"


def load_tokenizer(path: str | Path, model_cfg: ModelConfig) -> PreTrainedTokenizerBase:
    """The tokenizer, given its own pad token if it has none or pads with EOS (Huang et al. 2024)."""
    tokenizer = AutoTokenizer.from_pretrained(
        str(model_cfg.tokenizer or path), trust_remote_code=model_cfg.trust_remote_code
    )
    if tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer of {path} has no EOS token; generation could never stop")
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
        log.info("added a pad token %r to the tokenizer of %s", PAD_TOKEN, path)
    tokenizer.padding_side = "left"
    return tokenizer


def load_causal_lm(
    path: str | Path, model_cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase
) -> PreTrainedModel:
    """`AutoModelForCausalLM.from_pretrained`, with dropout off and embeddings sized to the tokenizer.

    A folder holding a LoRA adapter loads as its base model with the adapter merged in.
    """
    dtype = model_cfg.dtype if model_cfg.dtype == "auto" else getattr(torch, model_cfg.dtype)
    kwargs = dict(
        dtype=dtype,
        attn_implementation=model_cfg.attn_implementation,
        trust_remote_code=model_cfg.trust_remote_code,
    )
    if (Path(path) / "adapter_config.json").is_file():  # a LoRA export: base + adapter, merged
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(str(path), **kwargs).merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    disable_dropout(model)
    return model


def disable_dropout(model: torch.nn.Module) -> None:
    """Dropout off everywhere: RLHF needs train-time and sampling-time log-probs to agree (Ziegler 2019)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def apply_peft(model: PreTrainedModel, cfg: PeftConfig) -> torch.nn.Module:
    """Wrap the model in a LoRA adapter (Hu et al. 2021) when `peft.method=lora`; else return it."""
    if cfg.method == "none":
        return model
    from peft import LoraConfig, get_peft_model

    targets = "all-linear" if cfg.target_modules == ["all-linear"] else list(cfg.target_modules)
    lora = LoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets, task_type="CAUSAL_LM"
    )
    try:
        model = get_peft_model(model, lora)
    except ValueError as err:  # peft names the modules it could not find
        raise ValueError(f"peft.target_modules={cfg.target_modules}: {err}") from err
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log.info(
        "LoRA r=%d: %d of %d parameters trainable (%.2f%%)", cfg.r, trainable, total, 100 * trainable / total
    )
    return model


def export_causal_lm(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, out_dir: Path, cfg: PeftConfig
) -> None:
    """Save a standard HF folder (safetensors): merged weights, or the LoRA adapter alone.

    Both load back with `AutoModelForCausalLM.from_pretrained(out_dir)`; an adapter folder also
    with `PeftModel.from_pretrained(base, out_dir)`.
    """
    is_peft = hasattr(model, "peft_config")
    if is_peft and cfg.save == "merged":
        model = model.merge_and_unload()
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
