"""The one generation path of rlhf_lab: batched, left-padded, KV-cached sampling with log-probs.

Used for SFT samples, K completions per prompt, best-of-n, evaluation and inside every RL step.
Works for any HF causal LM (Llama, GPT-2, GPT-NeoX, ...) and for a peft ``PeftModel`` around one.

Conventions: prompts are LEFT-padded, responses RIGHT-padded; position ids are always
``cumsum(mask) - 1`` (0 on left padding), in prefill, in decode steps and in the fresh forward
passes of :func:`response_logprobs` (which lay the sequences end to end without padding where the
model allows, :func:`pack`), so a sequence gets the same numbers whatever its batch.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import torch
from torch import nn

from rlhf_lab.config import SamplingConfig
from rlhf_lab.data.prompts import encode_prompts
from rlhf_lab.losses import entropy_from_logprobs
from rlhf_lab.tensors import chunks, left_pad, position_ids_from_mask

log = logging.getLogger(__name__)

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
]


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


@dataclass
class Rollout:
    """A batch of prompts and their generated responses (all tensors on one device)."""

    prompt_ids: torch.Tensor  # (B, P) left-padded with pad_token_id
    prompt_mask: torch.Tensor  # (B, P) 1 on real prompt tokens
    response_ids: torch.Tensor  # (B, T) right-padded with pad_token_id after EOS / at the end
    response_mask: torch.Tensor  # (B, T) 1 on generated tokens up to and including EOS
    logprobs: torch.Tensor  # (B, T) float32 sampling log-prob of each response token, 0 if masked
    eos_token_id: int | None = None  # lets `ends_with_eos` tell EOS from truncation

    @property
    def ends_with_eos(self) -> torch.Tensor:
        """(B,) bool: the response ended with EOS (False: cut at max_new_tokens)."""
        lengths = self.lengths()  # (B,)
        width = self.response_ids.shape[1]
        if self.eos_token_id is None or width == 0:  # unknown EOS: shorter than T means stopped
            return lengths < width  # (B,)
        last = (lengths - 1).clamp(min=0).unsqueeze(1)  # (B, 1)
        last_tok = self.response_ids.gather(1, last).squeeze(1)  # (B,)
        return (lengths > 0) & (last_tok == self.eos_token_id)  # (B,)

    @property
    def sequences(self) -> torch.Tensor:
        """(B, P+T) prompt_ids ++ response_ids."""
        return torch.cat([self.prompt_ids, self.response_ids], dim=1)  # (B, P+T)

    @property
    def attention_mask(self) -> torch.Tensor:
        """(B, P+T) prompt_mask ++ response_mask."""
        return torch.cat([self.prompt_mask, self.response_mask], dim=1)  # (B, P+T)

    @property
    def position_ids(self) -> torch.Tensor:
        """(B, P+T) the position ids generation used: cumsum(mask) - 1, 0 on padding."""
        return position_ids_from_mask(self.attention_mask)  # (B, P+T)

    def lengths(self) -> torch.Tensor:
        """(B,) number of response tokens (EOS included)."""
        return self.response_mask.sum(dim=1)  # (B,)

    def prompt_lengths(self) -> torch.Tensor:
        """(B,) number of real prompt tokens."""
        return self.prompt_mask.sum(dim=1)  # (B,)

    def __len__(self) -> int:
        return self.prompt_ids.shape[0]

    def to(self, device: torch.device | str) -> Rollout:
        """A copy with every tensor on `device`."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return Rollout(**{k: v.to(device) if torch.is_tensor(v) else v for k, v in values.items()})

    def select(self, index: torch.Tensor) -> Rollout:
        """The rows `index` (a minibatch), every tensor indexed along the batch dimension."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return Rollout(**{k: v[index] if torch.is_tensor(v) else v for k, v in values.items()})

    def truncate_after(self, token_id: int, pad_token_id: int) -> Rollout:
        """Responses cut after the first `token_id` (a stop token, Huang et al. 2024): later tokens
        become padding and leave the mask."""
        hit = (self.response_ids == token_id) & self.response_mask.bool()  # (B, T)
        after = (hit.long().cumsum(dim=1) - hit.long()) > 0  # (B, T) strictly after the first stop
        keep = self.response_mask.bool() & ~after  # (B, T)
        return Rollout(
            self.prompt_ids,
            self.prompt_mask,
            self.response_ids.masked_fill(~keep, pad_token_id),
            keep.to(self.response_mask.dtype),
            self.logprobs.masked_fill(~keep, 0.0),
            self.eos_token_id,
        )


class ResponseStats(NamedTuple):
    """What :func:`response_logprobs` returns when asked for more than log-probs."""

    logprobs: torch.Tensor  # (B, T) float32
    entropy: torch.Tensor | None  # (B, T) float32, or None if not asked for
    logits: torch.Tensor | None  # (B, T, V) float32 logits / temperature, or None if not asked for
    hidden: torch.Tensor | None = None  # (B, T, d) last hidden state at the positions predicting
    # each response token (the states a value head reads), or None if not asked for


# ----------------------------------------------------------------------------------------------
# Model helpers
# ----------------------------------------------------------------------------------------------


def _unwrap(model: nn.Module) -> nn.Module:
    """The HF model under peft / DDP-style wrappers (to inspect its forward signature)."""
    for _ in range(8):
        if hasattr(model, "get_base_model"):
            model = model.get_base_model()
        elif isinstance(getattr(model, "module", None), nn.Module):
            model = model.module
        else:
            break
    return model


def _accepts_logits_to_keep(model: nn.Module) -> bool:
    """Whether the (unwrapped) model's forward takes `logits_to_keep`."""
    try:
        params = inspect.signature(_unwrap(model).forward).parameters
    except (TypeError, ValueError):
        return False
    return "logits_to_keep" in params


def _model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


class _eval_mode:
    """Context manager: every submodule in eval mode, each one's own mode restored after."""

    def __init__(self, model: nn.Module) -> None:
        self.modes = [(m, m.training) for m in model.modules()]
        self.model = model

    def __enter__(self) -> nn.Module:
        self.model.eval()
        return self.model

    def __exit__(self, *exc: object) -> None:
        for module, training in self.modes:
            module.training = training


# ----------------------------------------------------------------------------------------------
# Token selection
# ----------------------------------------------------------------------------------------------


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
) -> tuple[torch.Tensor, torch.Tensor]:
    """Next token (B,) and its log-prob (B,) under log_softmax(logits / T) (T = 1 if greedy).

    The log-prob is that of the temperature-scaled distribution BEFORE top-k / top-p filtering,
    which is what a fresh forward pass (:func:`response_logprobs`) reproduces.
    """
    logits = logits.float()  # (B, V)
    if greedy:
        logp = logits.log_softmax(dim=-1)  # (B, V)
        token = logits.argmax(dim=-1)  # (B,)
    else:
        scaled = logits / temperature if temperature != 1.0 else logits  # (B, V)
        logp = scaled.log_softmax(dim=-1)  # (B, V)
        filtered = _filter_top_p(_filter_top_k(scaled, top_k), top_p)  # (B, V)
        token = _sample(filtered.softmax(dim=-1), generator)  # (B,)
    token_logp = logp.gather(-1, token.unsqueeze(-1)).squeeze(-1)  # (B,)
    return token, token_logp


# ----------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------


def _decode_loop(
    model: nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    *,
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
    device = prompt_ids.device
    response = torch.full((batch, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
    alive = torch.zeros((batch, max_new_tokens), dtype=torch.bool, device=device)  # (B, N)
    logprobs = torch.zeros((batch, max_new_tokens), dtype=torch.float32, device=device)  # (B, N)
    mask = torch.ones((batch, plen + max_new_tokens), dtype=prompt_mask.dtype, device=device)
    mask[:, :plen] = prompt_mask  # (B, P+N) new tokens always attendable
    rows = torch.arange(batch, device=device)  # (A,) original index of each row still generating

    positions = position_ids_from_mask(prompt_mask)  # (B, P)
    extra = {"logits_to_keep": 1} if _accepts_logits_to_keep(model) else {}
    try:  # transformers 5 names the KV cache `cache` (argument, output); 4.x and remote code past_key_values
        takes_cache = "cache" in inspect.signature(_unwrap(model).forward).parameters
    except (TypeError, ValueError):
        takes_cache = False
    cache_name = "cache" if takes_cache else "past_key_values"
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
) -> Rollout:
    """Sample (or greedily decode) responses for left-padded prompts with a KV cache.

    Runs under ``torch.inference_mode`` with the model in eval mode (modes restored after).
    Each response stops at EOS (kept and masked-in); the loop stops when all rows are done or
    after `max_new_tokens`. Greedy when ``do_sample`` is False or ``temperature`` is 0.
    Log-probs are log_softmax(logits / temperature) at the chosen token (temperature 1 if
    greedy), unfiltered by top-k/top-p, in float32. The returned tensors are ordinary
    (non-inference) tensors, safe to feed into a later forward pass with gradients.
    """
    device = _model_device(model)
    prompt_ids = prompt_ids.to(device)  # (B, P)
    prompt_mask = prompt_mask.to(device)  # (B, P)
    if prompt_ids.shape != prompt_mask.shape or prompt_ids.ndim != 2:
        raise ValueError(f"prompt ids {prompt_ids.shape} and mask {prompt_mask.shape} differ")
    if prompt_ids.shape[1] == 0 or not bool(prompt_mask[:, -1].all()):
        raise ValueError("prompts must be non-empty and LEFT-padded (last column all real tokens)")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    greedy = not do_sample or temperature == 0

    def pick(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _select(
            logits,
            greedy=greedy,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            generator=generator,
        )

    if max_new_tokens <= 0:
        empty = prompt_ids.new_zeros((prompt_ids.shape[0], 0))  # (B, 0)
        return Rollout(
            prompt_ids, prompt_mask, empty, empty.to(prompt_mask.dtype), empty.float(), eos_token_id
        )
    with _eval_mode(model), torch.inference_mode():
        response, mask, logprobs = _decode_loop(
            model,
            prompt_ids,
            prompt_mask,
            max_new_tokens=max_new_tokens,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            pick=pick,
        )
    # Clone outside inference mode: inference tensors cannot be saved for backward later on.
    return Rollout(prompt_ids, prompt_mask, response.clone(), mask.clone(), logprobs.clone(), eos_token_id)


# ----------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------


def response_logprobs(
    model: nn.Module,
    rollout: Rollout,
    temperature: float = 1.0,
    *,
    return_entropy: bool = False,
    entropy_grad: bool = False,
    return_logits: bool = False,
    return_hidden: bool = False,
) -> torch.Tensor | ResponseStats:
    """(B, T) log-probs of the response tokens under log_softmax(logits / temperature).

    A fresh forward pass over prompt + response with the same position ids as generation, padding-free
    when the model supports it (:func:`response_states`); 0 where response_mask is 0. Runs with
    gradients if enabled (the RL step calls it that way) and leaves the model's train/eval mode alone.
    With `return_entropy` / `return_logits`, returns a :class:`ResponseStats` (logprobs, entropy (B, T),
    logits / temperature (B, T, V)); the entropy carries a gradient only with `entropy_grad` (a loss
    term, not just a metric). With `return_hidden`, also the last hidden states (B, T, d) at the same
    positions as the logits.
    """
    device = _model_device(model)
    rollout = rollout.to(device)

    def run(input_ids, position_ids, attention_mask, keep):
        extra = {"logits_to_keep": keep} if keep and _accepts_logits_to_keep(model) else {}
        out = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
            output_hidden_states=return_hidden,
            **extra,
        )
        return (out.logits, out.hidden_states[-1]) if return_hidden else (out.logits,)

    logits, *hidden = response_states(run, rollout, model)  # (B, T, V), [(B, T, d)]
    logits = logits.float()  # (B, T, V)
    if temperature != 1.0:
        logits = logits / temperature  # (B, T, V)
    logp_all = logits.log_softmax(dim=-1)  # (B, T, V)
    resp_mask = rollout.response_mask.bool()  # (B, T)
    logp = logp_all.gather(-1, rollout.response_ids.unsqueeze(-1)).squeeze(-1)  # (B, T)
    logp = logp.masked_fill(~resp_mask, 0.0)  # (B, T)
    if not (return_entropy or return_logits or return_hidden):
        return logp
    entropy = None
    if return_entropy:
        with torch.set_grad_enabled(torch.is_grad_enabled() and entropy_grad):
            entropy = entropy_from_logprobs(logp_all)  # (B, T)
            entropy = entropy.masked_fill(~resp_mask, 0.0)  # (B, T)
    return ResponseStats(logp, entropy, logits if return_logits else None, hidden[0] if hidden else None)


# ----------------------------------------------------------------------------------------------
# Padding-free forward passes
# ----------------------------------------------------------------------------------------------

PACK_WIDTH = 2  # packed rows hold up to this many times the longest sequence: few rows, short attention
_PACKING_WORKS: dict[tuple, bool] = {}  # (model class, attention implementation) -> probe result


class Packed(NamedTuple):
    """A rollout's sequences laid end to end in a few rows, without padding."""

    input_ids: torch.Tensor  # (R, W) filler (id 0, its own one-token sequence) after the last sequence
    position_ids: torch.Tensor  # (R, W) 0, 1, ... within each sequence: the positions of the padded layout
    predicts: torch.Tensor  # (B, T) index into the flattened (R*W) positions of the state that predicts
    # each response token (an arbitrary valid index where the response mask is 0)


def pack(rollout: Rollout) -> Packed:
    """Pack prompt + response of every row first-fit decreasing into rows of PACK_WIDTH x the longest.

    With no attention mask, HF models read sequence boundaries off position ids that restart at 0
    (`transformers.masking_utils.find_packed_sequence_indices`) and build a block-diagonal causal mask,
    so each sequence attends to itself only: the same computation as the padded layout on fewer tokens.
    """
    mask = rollout.attention_mask.bool()  # (B, L) real tokens are contiguous: left-padded prompt ++ response
    lengths = mask.sum(dim=1).tolist()
    width = PACK_WIDTH * max(lengths)
    row, start = _first_fit_decreasing(lengths, width)
    device = mask.device
    row_t = torch.tensor(row, device=device)  # (B,)
    start_t = torch.tensor(start, device=device)  # (B,)
    positions = position_ids_from_mask(mask)  # (B, L)
    slot = (row_t * width + start_t).unsqueeze(1) + positions  # (B, L) flat packed index of each token
    size = (max(row) + 1) * width
    input_ids = torch.zeros(size, dtype=torch.long, device=device)  # (R*W,)
    input_ids[slot[mask]] = rollout.sequences[mask]
    position_ids = torch.zeros(size, dtype=torch.long, device=device)  # (R*W,)
    position_ids[slot[mask]] = positions[mask]
    num_resp = rollout.response_ids.shape[1]
    first = row_t * width + start_t + rollout.prompt_lengths() - 1  # (B,) predicts response token 0
    predicts = (first.unsqueeze(1) + torch.arange(num_resp, device=device)).clamp_(max=size - 1)  # (B, T)
    return Packed(input_ids.view(-1, width), position_ids.view(-1, width), predicts)


def _first_fit_decreasing(lengths: list[int], width: int) -> tuple[list[int], list[int]]:
    """(row, start) of each item when items go, longest first, into the first row with room."""
    row, start, free = [0] * len(lengths), [0] * len(lengths), []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        r = next((r for r, room in enumerate(free) if room >= lengths[i]), len(free))
        if r == len(free):
            free.append(width)
        row[i], start[i] = r, width - free[r]
        free[r] -= lengths[i]
    return row, start


def response_states(run: Callable, rollout: Rollout, model: nn.Module) -> tuple[torch.Tensor, ...]:
    """Per-position outputs of `model` at the positions that predict each response token, (B, T, X) each.

    `run(input_ids, position_ids, attention_mask, keep)` calls `model` and returns a tuple of (R, L, X)
    outputs (logits, hidden states, ...); `keep` = how many final positions the first output needs
    (0 = all). Packed (:func:`pack`) when the model's class passes a one-time probe, else one
    left-padded batch.
    """
    num_resp = rollout.response_ids.shape[1]
    if num_resp and _packing_works(run, model):
        packed = pack(rollout)
        outputs = run(packed.input_ids, packed.position_ids, None, 0)
        return tuple(out.flatten(0, 1)[packed.predicts] for out in outputs)  # (B, T, X) each
    mask = rollout.attention_mask  # (B, P+T)
    outputs = run(rollout.sequences, position_ids_from_mask(mask), mask, num_resp + 1)
    # Positions P-1 .. P+T-2 predict the T response tokens.
    return tuple(out[:, out.shape[1] - num_resp - 1 : -1] for out in outputs)  # (B, T, X) each


def _packing_works(run: Callable, model: nn.Module) -> bool:
    """Whether packed rows give the padded numbers for this model's class and attention implementation:
    two sequences packed in one row against the second alone, checked once per class (a model that
    ignores packed position ids would let the second sequence attend to the first)."""
    base = _unwrap(model)
    key = (type(base), getattr(getattr(base, "config", None), "_attn_implementation", None))
    if key not in _PACKING_WORKS:
        device = _model_device(model)
        ids, positions = [[5, 3, 4, 2, 1, 4, 3]], [[0, 1, 2, 3, 0, 1, 2]]  # (1, 7) two sequences
        with _eval_mode(model), torch.no_grad():
            packed = run(torch.tensor(ids, device=device), torch.tensor(positions, device=device), None, 0)[0]
            alone = run(torch.tensor([ids[0][4:]], device=device), None, None, 0)[0]
        _PACKING_WORKS[key] = torch.allclose(packed[0, 4:].float(), alone[0].float(), atol=1e-4, rtol=1e-3)
        if not _PACKING_WORKS[key]:
            log.info("%s (%s attention) does not separate packed sequences: padded batches", *key)
    return _PACKING_WORKS[key]


# ----------------------------------------------------------------------------------------------
# Text convenience
# ----------------------------------------------------------------------------------------------


def decode_responses(tokenizer: Any, rollout: Rollout) -> list[str]:
    """Each row's response as text: its real tokens (up to and including EOS), special tokens skipped."""
    rows, lengths = rollout.response_ids.tolist(), rollout.lengths().tolist()
    return [tokenizer.decode(row[:n], skip_special_tokens=True) for row, n in zip(rows, lengths, strict=True)]


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
    prompts: list[str],
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
