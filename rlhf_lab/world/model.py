"""The tiny Llama-architecture causal LM of the offline world, built from a config."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from rlhf_lab.config import TinyModelConfig


def llama_config(arch: TinyModelConfig, vocab_size: int, **special_ids: int | None) -> LlamaConfig:
    """The HF config of the tiny Llama: tied embeddings, no dropout; `special_ids`: bos/eos/pad_token_id."""
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_layers,
        num_attention_heads=arch.num_heads,
        num_key_value_heads=arch.num_kv_heads,
        max_position_embeddings=arch.max_position_embeddings,
        tie_word_embeddings=True,
        attention_dropout=0.0,
        **special_ids,
    )


def build_tiny_llama(
    arch: TinyModelConfig, tokenizer: PreTrainedTokenizerBase, seed: int
) -> LlamaForCausalLM:
    """A randomly initialized Llama with tied embeddings and no dropout."""
    config = llama_config(
        arch,
        len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def parameter_count(arch: TinyModelConfig, vocab_size: int) -> int:
    """Parameters of the tiny Llama of `arch` over `vocab_size` tokens, embeddings counted once (tied)."""
    with torch.device("meta"):
        return sum(p.numel() for p in LlamaForCausalLM(llama_config(arch, vocab_size)).parameters())
