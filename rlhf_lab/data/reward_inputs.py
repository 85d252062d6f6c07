"""The one batch a reward model reads, in training (`data.preferences`) and in scoring (`scorers`)."""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

from rlhf_lab.tensors import left_pad, position_ids_from_mask, shared_prefix


def reward_inputs(
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    completions: list[str],
    max_length: int,
    mark_completion: bool = True,
) -> dict[str, torch.Tensor]:
    """A left-padded batch of prompt + completion in the reward model's own tokenizer, cut to
    `max_length` and ending in one EOS, so the policy's tokenizer never matters (its text is re-tokenized;
    a conversation is rendered with the reward model's own chat template before, `data.chat`).

    input_ids, attention_mask, position_ids (N, L); with `mark_completion`, completion_mask (N, L):
    the tokens after the prompt's own (the longest prefix shared with the prompt tokenized alone),
    EOS included. Only pool="sum" reads it; leaving it out spares tokenizing the prompts again.
    """
    joint = tokenizer([p + c for p, c in zip(prompts, completions, strict=True)])["input_ids"]
    eos = tokenizer.eos_token_id
    joint = [x[:-1] if x and x[-1] == eos else x for x in joint]  # a chat template's own end-of-turn EOS
    ids = [x[: max_length - 1] + [eos] for x in joint]
    input_ids, mask = left_pad(ids, tokenizer.pad_token_id)  # (N, L)
    inputs = {"input_ids": input_ids, "attention_mask": mask, "position_ids": position_ids_from_mask(mask)}
    if mark_completion:
        prompt_tokens = [
            min(shared_prefix(alone, x), len(x) - 1)  # at least the EOS is the completion's
            for alone, x in zip(tokenizer(prompts)["input_ids"], ids, strict=True)
        ]
        first = torch.tensor([mask.shape[1] - len(x) + n for x, n in zip(ids, prompt_tokens, strict=True)])
        inputs["completion_mask"] = torch.arange(mask.shape[1])[None, :] >= first[:, None]  # (N, L)
    return inputs
