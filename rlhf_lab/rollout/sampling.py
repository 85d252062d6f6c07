"""Batched, left-padded, KV-cached sampling with log-probs: the one generation path of rlhf_lab."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import nn

from rlhf_lab.config import SamplingConfig
from rlhf_lab.data.chat import Prompt
from rlhf_lab.data.prompts import encode_prompts
from rlhf_lab.models import accepts, eval_mode, model_device
from rlhf_lab.rollout.batch import Rollout, decode_responses
from rlhf_lab.tensors import chunks, left_pad, position_ids_from_mask, repeat_each


def _filter_top_k(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """(B, V) logits with everything below the k-th largest set to -inf."""
    if top_k <= 0 or top_k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))  # (B, V)


def _filter_top_p(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """(B, V) logits outside the smallest nucleus of mass >= top_p set to -inf."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # (B, V), (B, V)
    probs = sorted_logits.softmax(dim=-1)  # (B, V)
    mass_before = probs.cumsum(dim=-1) - probs  # (B, V) mass of strictly better tokens
    drop = mass_before >= top_p  # (B, V)
    drop[:, 0] = False  # always keep the best token
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))  # (B, V)
    return torch.empty_like(logits).scatter_(-1, order, sorted_logits)  # (B, V)


def truncate(
    logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0, keep: torch.Tensor | None = None
) -> torch.Tensor:
    """(..., V) logits with every token outside the top-k / top-p set at -inf, as `_select` samples; the
    set is found without gradient, the kept logits keep theirs. `keep` (...,): token ids kept whatever
    (the sampled tokens, when a fresh pass replays the truncation: after an update, or by a last-bit
    difference at the boundary, a sampled token may fall outside the set and get log-prob -inf)."""
    if top_k <= 0 and top_p >= 1.0:
        return logits
    flat = logits.reshape(-1, logits.shape[-1])  # (N, V)
    with torch.no_grad():
        dropped = _filter_top_p(_filter_top_k(flat.detach(), top_k), top_p).isneginf()  # (N, V)
        if keep is not None:
            dropped.scatter_(-1, keep.reshape(-1, 1), False)
    return flat.masked_fill(dropped, float("-inf")).view(logits.shape)  # (..., V)


def _sample(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """(B,) one draw per row of (B, V) probs by inverse CDF: a single uniform per row, no sync.

    Zero-probability tokens are never drawn (their CDF step is flat); float64 keeps the CDF exact.
    """
    cdf = probs.double().cumsum(dim=-1)  # (B, V)
    u = torch.rand(probs.shape[0], 1, generator=generator, dtype=torch.float64, device=probs.device)  # (B, 1)
    token = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)  # (B, 1)
    return token.squeeze(1).clamp_(max=probs.shape[-1] - 1)  # (B,)


def _select(
    logits: torch.Tensor,
    *,
    greedy: bool,
    temperature: float,
    top_k: int,
    top_p: float,
    generator: torch.Generator | None,
    truncated_logprobs: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Next token (B,) and its log-prob (B,) under log_softmax(logits / T) (T = 1 if greedy).

    The log-prob is that of the temperature-scaled distribution before top-k / top-p filtering, or,
    with `truncated_logprobs`, that of the distribution that sampled (filtered and renormalized): a
    fresh forward pass (:func:`response_logprobs` with or without the same top_k / top_p) reproduces
    either.
    """
    logits = logits.float()  # (B, V)
    if greedy:
        logp = logits.log_softmax(dim=-1)  # (B, V)
        token = logits.argmax(dim=-1)  # (B,)
    else:
        scaled = logits / temperature if temperature != 1.0 else logits  # (B, V)
        filtered = _filter_top_p(_filter_top_k(scaled, top_k), top_p)  # (B, V)
        logp = (filtered if truncated_logprobs else scaled).log_softmax(dim=-1)  # (B, V)
        token = _sample(filtered.softmax(dim=-1), generator)  # (B,)
    token_logp = logp.gather(-1, token.unsqueeze(-1)).squeeze(-1)  # (B,)
    return token, token_logp


def _buffers(batch: int, width: int, pad_token_id: int, device) -> tuple[torch.Tensor, ...]:
    """Response ids (B, N) filled with padding, alive (B, N) and log-probs (B, N), all empty."""
    response = torch.full((batch, width), pad_token_id, dtype=torch.long, device=device)  # (B, N)
    alive = torch.zeros((batch, width), dtype=torch.bool, device=device)  # (B, N)
    logprobs = torch.zeros((batch, width), dtype=torch.float32, device=device)  # (B, N)
    return response, alive, logprobs


def _decode_loop(
    model: nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    max_new_tokens: int,
    eos_token_id: int,
    pad_token_id: int,
    pick: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prefill once, then one cached step per token. Returns response ids, mask, log-probs.

    Rows that emit EOS leave the batch (and the KV cache) at once, so each decode step only runs
    the rows still generating: with ragged lengths, the tail of the loop costs a fraction of a step.
    """
    batch, plen = prompt_ids.shape
    response, alive, logprobs = _buffers(batch, max_new_tokens, pad_token_id, prompt_ids.device)
    mask = prompt_mask.new_ones((batch, plen + max_new_tokens))
    mask[:, :plen] = prompt_mask  # (B, P+N) new tokens always attendable
    rows = torch.arange(batch, device=prompt_ids.device)  # (A,) original index of each row still generating

    positions = position_ids_from_mask(prompt_mask)  # (B, P)
    extra = {"logits_to_keep": 1} if accepts(model, "logits_to_keep") else {}
    # transformers 5 names the KV cache `cache` (argument and output); 4.x and remote code past_key_values
    cache_name = "cache" if accepts(model, "cache") else "past_key_values"
    out = model(
        input_ids=prompt_ids,
        attention_mask=prompt_mask,
        position_ids=positions,
        use_cache=True,
        **extra,
    )
    cache = out[cache_name]
    next_pos = positions[:, -1:] + 1  # (B, 1) prompts are left-padded: last column is real
    steps = 0
    for t in range(max_new_tokens):
        token, token_logp = pick(out.logits[:, -1, :])  # (A,), (A,)
        alive[rows, t] = True
        response[rows, t] = token
        logprobs[rows, t] = token_logp
        going = token != eos_token_id  # (A,)
        steps = t + 1
        if steps == max_new_tokens or not bool(going.any()):
            break
        if not bool(going.all()):  # drop the rows that just ended, from the batch and the cache
            keep = going.nonzero().squeeze(1)  # (A',)
            rows, token, next_pos, mask = rows[keep], token[keep], next_pos[keep], mask[keep]
            cache.batch_select_indices(keep)
        out = model(
            input_ids=token.unsqueeze(1),  # (A, 1)
            attention_mask=mask[:, : plen + steps],  # (A, P+t+1)
            position_ids=next_pos,  # (A, 1)
            use_cache=True,
            **{cache_name: cache},
        )
        next_pos = next_pos + 1  # (A, 1)
    return response[:, :steps], alive[:, :steps].to(prompt_mask.dtype), logprobs[:, :steps]


def _checked(
    prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt ids and mask (B, P) on `device`, checked to be left-padded and of one shape."""
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)  # (B, P) each
    if prompt_ids.shape != prompt_mask.shape or prompt_ids.ndim != 2:
        raise ValueError(f"prompt ids {prompt_ids.shape} and mask {prompt_mask.shape} differ")
    if prompt_ids.shape[1] == 0 or not bool(prompt_mask[:, -1].all()):
        raise ValueError("prompts must be non-empty and LEFT-padded (last column all real tokens)")
    return prompt_ids, prompt_mask


def generate(
    model: nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    *,
    max_new_tokens: int,
    eos_token_id: int,
    pad_token_id: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    do_sample: bool = True,
    generator: torch.Generator | None = None,
    truncated_logprobs: bool = False,
) -> Rollout:
    """Sample (or greedily decode) responses for left-padded prompts with a KV cache.

    Runs under ``torch.inference_mode`` with the model in eval mode (modes restored after).
    Each response stops at EOS (kept and masked-in); the loop stops when all rows are done or
    after `max_new_tokens`. Greedy when ``do_sample`` is False or ``temperature`` is 0.
    Log-probs are log_softmax(logits / temperature) at the chosen token (temperature 1 if
    greedy), unfiltered by top-k/top-p, in float32; with `truncated_logprobs`, those of the
    filtered, renormalized distribution that sampled. The returned tensors are ordinary
    (non-inference) tensors, safe to feed into a later forward pass with gradients.
    """
    prompt_ids, prompt_mask = _checked(prompt_ids, prompt_mask, model_device(model))  # (B, P) each
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if max_new_tokens <= 0:
        empty = prompt_ids.new_zeros((prompt_ids.shape[0], 0))  # (B, 0)
        return Rollout(
            prompt_ids, prompt_mask, empty, empty.to(prompt_mask.dtype), empty.float(), eos_token_id
        )
    greedy = not do_sample or temperature == 0
    pick = partial(
        _select,
        greedy=greedy,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        generator=generator,
        truncated_logprobs=truncated_logprobs,
    )
    with eval_mode(model), torch.inference_mode():
        response, mask, logprobs = _decode_loop(
            model, prompt_ids, prompt_mask, max_new_tokens, eos_token_id, pad_token_id, pick
        )
    # Clone outside inference mode: inference tensors cannot be saved for backward later on.
    return Rollout(prompt_ids, prompt_mask, response.clone(), mask.clone(), logprobs.clone(), eos_token_id)


def generation_args(sampling: SamplingConfig) -> dict[str, Any]:
    """The arguments of :func:`generate` that a `SamplingConfig` sets (greedy at temperature 0): the one
    place where sampling settings become generation arguments."""
    return dict(
        max_new_tokens=sampling.max_new_tokens,
        temperature=sampling.temperature,
        top_k=sampling.top_k,
        top_p=sampling.top_p,
        do_sample=sampling.temperature > 0,
    )


def generate_text(
    model: nn.Module,
    tokenizer: Any,
    prompts: list[Prompt],
    *,
    max_prompt_length: int | None = None,
    batch_size: int = 64,
    max_new_tokens: int = 48,
    **sampling: Any,
) -> list[str]:
    """Generate a response string per prompt (special tokens skipped), in batches.

    Prompts are encoded by the long-prompt rule (`data.prompts.encode_prompts`: as ``tokenizer(prompt)``
    frames them, the last `max_prompt_length` tokens kept) and left-padded with ``tokenizer.pad_token_id``
    (EOS if there is none). `sampling` goes to :func:`generate` (temperature, top_k, top_p, do_sample,
    generator, eos_token_id, ...; :func:`generation_args` of a `SamplingConfig`).
    """
    eos = sampling.pop("eos_token_id", tokenizer.eos_token_id)
    pad = sampling.pop("pad_token_id", tokenizer.pad_token_id)
    pad = eos if pad is None else pad
    texts: list[str] = []
    for chunk in chunks(encode_prompts(tokenizer, prompts, max_prompt_length), batch_size):
        ids, mask = left_pad(list(chunk), pad)  # (b, P), (b, P)
        rollout = generate(
            model, ids, mask, max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=pad, **sampling
        )
        texts += decode_responses(tokenizer, rollout)
    return texts


def sample_completions(
    model,
    tokenizer,
    prompts: list[Prompt],
    k: int,
    sampling: SamplingConfig,
    seed: int,
    max_prompt_length: int,
) -> list[str]:
    """k completions of each prompt, flat: those of prompt i are at i*k .. i*k+k-1 (a conversational
    prompt is rendered with the policy's chat template; its completions are the assistant's replies)."""
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    return generate_text(
        model,
        tokenizer,
        repeat_each(prompts, k),  # (N*k,)
        max_prompt_length=max_prompt_length,
        batch_size=sampling.batch_size,
        generator=generator,
        **generation_args(sampling),
    )
