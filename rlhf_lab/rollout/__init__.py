"""The one generation path of rlhf_lab: batched, left-padded, KV-cached sampling with log-probs.

Used for SFT samples, K completions per prompt, best-of-n, evaluation and inside every RL step.
Works for any HF causal LM (Llama, GPT-2, GPT-NeoX, ...) and for a peft ``PeftModel`` around one.

Conventions: prompts are LEFT-padded, responses RIGHT-padded; position ids are always
``cumsum(mask) - 1`` (0 on left padding), in prefill, in decode steps and in the fresh forward
passes of :func:`response_logprobs` (which lay the sequences end to end without padding where the
model allows, :func:`pack`), so a sequence gets the same numbers whatever its batch.

    batch.py     Rollout (prompts and responses, masks, sampling log-probs), ResponseStats
    sampling.py  generate: prefill, then one cached step per token; token selection; generate_text;
                 sample_completions: K completions of each prompt
    passes.py    response_logprobs / response_states: fresh passes, packed where the model allows
"""

from rlhf_lab.rollout.batch import ResponseStats, Rollout, decode_responses
from rlhf_lab.rollout.passes import pack, response_logprobs, response_states
from rlhf_lab.rollout.sampling import generate, generate_text, generation_args, sample_completions

__all__ = [
    "ResponseStats",
    "Rollout",
    "decode_responses",
    "generate",
    "generate_text",
    "generation_args",
    "pack",
    "response_logprobs",
    "response_states",
    "sample_completions",
]
