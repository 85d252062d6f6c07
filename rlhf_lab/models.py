"""Loading, adapting and exporting Hugging Face causal LMs; the same path for the tiny world and the hub."""

from __future__ import annotations

import dataclasses
import inspect
import logging
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from rlhf_lab.config import ConfigError, ModelConfig, PeftConfig

log = logging.getLogger(__name__)
PAD_TOKEN = "<|pad|>"


def folder_settings(model_cfg: ModelConfig) -> ModelConfig:
    """The model settings for loading a folder that carries its own tokenizer (an artifact, a reward
    model): the run's settings (dtype, attention, trust_remote_code) without its tokenizer override."""
    return dataclasses.replace(model_cfg, tokenizer=None)


def load_tokenizer(path: str | Path, model_cfg: ModelConfig) -> PreTrainedTokenizerBase:
    """The tokenizer, given its own pad token if it has none or pads with EOS (Huang et al. 2024)."""
    tokenizer = AutoTokenizer.from_pretrained(
        str(model_cfg.tokenizer or path), trust_remote_code=model_cfg.trust_remote_code
    )
    if tokenizer.eos_token_id is None:
        raise ConfigError(f"tokenizer of {path} has no EOS token; generation could never stop")
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


def apply_peft(model: PreTrainedModel, cfg: PeftConfig, task_type: str = "CAUSAL_LM") -> torch.nn.Module:
    """Wrap the model in a LoRA adapter (Hu et al. 2021) when `peft.method=lora`; else return it.

    With task_type="SEQ_CLS" peft also trains the reward head in full.
    """
    if cfg.method == "none":
        return model
    from peft import LoraConfig, get_peft_model

    targets = "all-linear" if cfg.target_modules == ["all-linear"] else list(cfg.target_modules)
    if targets != "all-linear":  # peft accepts a list that only partly matches; every name must exist
        leaves = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if n and not list(m.children())}
        missing = [t for t in targets if t not in leaves]
        if missing:
            raise ConfigError(
                f"peft.target_modules: {missing} are not layers of this model; it has {sorted(leaves)}"
            )
    lora = LoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets, task_type=task_type
    )
    try:
        model = get_peft_model(model, lora)
    except ValueError as err:  # peft names the modules it could not find
        raise ConfigError(f"peft.target_modules={cfg.target_modules}: {err}") from err
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log.info(
        "LoRA r=%d: %d of %d parameters trainable (%.2f%%)", cfg.r, trainable, total, 100 * trainable / total
    )
    return model


def export_model(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, out_dir: Path, cfg: PeftConfig
) -> None:
    """Save a standard HF folder (safetensors): merged weights, or the LoRA adapter alone.

    A causal LM loads back with `AutoModelForCausalLM.from_pretrained(out_dir)`, an adapter folder
    also with `PeftModel.from_pretrained(base, out_dir)`; reward models are always exported merged.
    """
    is_peft = hasattr(model, "peft_config")
    if is_peft and cfg.save == "merged":
        model = model.merge_and_unload()
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


# ------------------------------------------------------------------------------- reward models
def load_reward_model(
    path: str | Path,
    model_cfg: ModelConfig,
    tokenizer: PreTrainedTokenizerBase,
    new_head: bool,
    pool: str = "last",
) -> PreTrainedModel:
    """A causal-LM backbone with a scalar head (HF's `AutoModelForSequenceClassification`, num_labels=1),
    read as `reward_logits` says: at the last non-pad token, or summed over the completion.

    `new_head=True` puts a fresh head on an LM folder and records `pool` in the config as
    `reward_pool`: N(0, 1/sqrt(d_model + 1)) for the last token (Stiennon 2020); zeros for the sum,
    which adds the head up over ~25 tokens and so starts ~5x as loud (in the tiny world a random head
    stalled it for ~150 steps). `new_head=False` loads a trained reward model as saved.
    """
    dtype = model_cfg.dtype if model_cfg.dtype == "auto" else getattr(torch, model_cfg.dtype)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(path),
        num_labels=1,
        dtype=dtype,
        attn_implementation=model_cfg.attn_implementation,
        trust_remote_code=model_cfg.trust_remote_code,
    )
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    if new_head:
        head = model.score  # the scalar head of HF's *ForSequenceClassification (Llama, GPT-2, NeoX)
        if pool == "last":
            torch.nn.init.normal_(head.weight, std=1 / (model.config.hidden_size + 1) ** 0.5)
        else:
            torch.nn.init.zeros_(head.weight)
        if head.bias is not None:
            torch.nn.init.zeros_(head.bias)
        model.config.reward_pool = pool
    disable_dropout(model)
    return model


def reward_logits(model: torch.nn.Module, inputs: dict[str, torch.Tensor], pool: str) -> torch.Tensor:
    """(N,) raw rewards of a sequence-classification model on a `reward_inputs` batch.

    pool="last": the head at the final token, HF's own read-out (Stiennon 2020, Ouyang 2022).
    pool="sum": the head applied to every hidden state and summed over the completion's tokens, a
    per-token reward; a bag of contextual word scores, as lexicon scorers like VADER are built.
    """
    model_inputs = {k: inputs[k] for k in ("input_ids", "attention_mask", "position_ids")}
    if pool == "last":
        return model(**model_inputs).logits[:, 0]
    classifier = unwrap(model)  # peft's wrapper around the classifier
    hidden = classifier.base_model(**model_inputs).last_hidden_state  # (N, L, d)
    per_token = classifier.score(hidden)[..., 0]  # (N, L)
    return (per_token * inputs["completion_mask"]).sum(-1)  # (N,)


# ------------------------------------------------------------------------------ model introspection
def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The HF model under peft / DDP-style wrappers."""
    for _ in range(8):
        if hasattr(model, "get_base_model"):
            model = model.get_base_model()
        elif isinstance(getattr(model, "module", None), torch.nn.Module):
            model = model.module
        else:
            break
    return model


def accepts(model: torch.nn.Module, argument: str) -> bool:
    """Whether the (unwrapped) model's forward takes `argument` (e.g. logits_to_keep, cache)."""
    try:
        return argument in inspect.signature(unwrap(model).forward).parameters
    except (TypeError, ValueError):
        return False


def model_device(model: torch.nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of a HF decoder (Llama-style: `self_attn` and `mlp`), LoRA-wrapped or not."""
    return [m for m in model.modules() if hasattr(m, "self_attn") and hasattr(m, "mlp")]


def add_training_dropout(model: nn.Module, p: float, key: str = "reward_model.dropout"):
    """Dropout with probability p on attention probabilities (the attention modules' `attention_dropout`,
    which HF applies only in train mode) and on each block's attention and MLP outputs, before they
    are added to the residual stream (forward hooks, active only in train mode). The model's config is
    left untouched, so nothing of this is saved. Returns a function that removes it all again. `key`: the
    setting named when the model has no decoder layers."""
    if p == 0:
        return lambda: None
    layers = decoder_layers(model)
    if not layers:
        raise ConfigError(f"{key}: found no decoder layers (modules with self_attn and mlp)")

    def drop(module: nn.Module, args, output):
        if not module.training:
            return output
        if isinstance(output, tuple):  # attention returns (hidden, weights)
            return (nn.functional.dropout(output[0], p, training=True), *output[1:])
        return nn.functional.dropout(output, p, training=True)

    handles, attention = [], []
    for layer in layers:
        handles += [layer.self_attn.register_forward_hook(drop), layer.mlp.register_forward_hook(drop)]
        if hasattr(layer.self_attn, "attention_dropout"):
            attention.append((layer.self_attn, layer.self_attn.attention_dropout))
            layer.self_attn.attention_dropout = p

    def remove() -> None:
        for h in handles:
            h.remove()
        for module, before in attention:
            module.attention_dropout = before

    return remove


class eval_mode:
    """Context manager: every submodule in eval mode, each one's own mode restored after."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.modes = [(m, m.training) for m in model.modules()]
        self.model = model

    def __enter__(self) -> torch.nn.Module:
        self.model.eval()
        return self.model

    def __exit__(self, *exc: object) -> None:
        for module, training in self.modes:
            module.training = training
