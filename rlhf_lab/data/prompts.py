"""Prompts as token ids: the one long-prompt rule of every stage (SFT, collect, RL, best-of-n, eval),
and where a conversational prompt meets the policy's chat template.

A prompt longer than `data.max_prompt_length` tokens keeps its LAST `max_prompt_length` tokens: the
end is what the model continues (the left truncation of TRL and OpenRLHF). The log says how many
prompts of a source were cut, once per source.
"""

from __future__ import annotations

import logging

from rlhf_lab.data.chat import Prompt, render

log = logging.getLogger(__name__)


def encode_prompts(
    tokenizer, prompts: list[Prompt], max_length: int | None, source: str = "prompts"
) -> list[list[int]]:
    """Token ids of each prompt as `tokenizer(prompt)` frames it (BOS etc.), cut from the left to
    `max_length` tokens (None: no limit). A conversational prompt (a message list) is first rendered
    with the tokenizer's chat template and its generation prompt (`data.chat.render`)."""
    ids = [tokenizer(render(tokenizer, prompt))["input_ids"] for prompt in prompts]
    if max_length is None:
        return ids
    cut = sum(len(x) > max_length for x in ids)
    if cut:
        log.info(
            "%s: %d of %d prompts are longer than data.max_prompt_length=%d tokens: each keeps its last ones",
            source,
            cut,
            len(ids),
            max_length,
        )
    return [x[-max_length:] for x in ids]
