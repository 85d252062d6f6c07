"""Held-out evaluation of a policy, shared by the RL stage (every `rl.eval_every` steps) and the eval
stage (the pipeline's summary): sample once per prompt, measure the exact KL to the reference, score.

The KL is exact per token, Σ_v π(v|·) log π(v|·)/π_ref(v|·) from the full logits, summed over the
response: no estimator noise beyond the choice of the sampled contexts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from rlhf_lab.losses import categorical_kl
from rlhf_lab.rollout import Rollout, decode_responses, response_logprobs
from rlhf_lab.seeds import derive_seed
from rlhf_lab.tensors import left_pad

KL_ROWS = 32  # sequences whose full (T, V) logits are held at once for the exact KL

Generate = Callable[[torch.Tensor, torch.Tensor], Rollout]  # (left-padded ids, mask) -> rollout
ReferenceLogits = Callable[[Rollout], torch.Tensor]  # rollout -> (B, T, V) reference logits


def held_out_generator(seed: int, device: torch.device | str) -> torch.Generator:
    """The sampler of held-out evaluation: the same draws at every evaluation of a run, and the same in
    RL's evaluations and the eval stage's."""
    return torch.Generator(device=device).manual_seed(derive_seed(seed, "held_out"))


@dataclass
class Samples:
    completions: list[str]  # one per prompt
    kl: torch.Tensor  # (B,) exact KL(π ‖ π_ref) of each response, nats
    length: torch.Tensor  # (B,) response tokens


@torch.no_grad()
def sample_with_kl(
    policy: nn.Module,
    tokenizer,
    prompt_ids: list[list[int]],
    generate: Generate,
    reference_logits: ReferenceLogits | None,
    temperature: float,
    batch_size: int,
) -> Samples:
    """One response per prompt from `generate`, its length, and its exact KL to the reference
    (zeros when `reference_logits` is None: the policy is its own reference)."""
    completions, kls, lengths = [], [], []
    for start in range(0, len(prompt_ids), batch_size):
        ids, mask = left_pad(prompt_ids[start : start + batch_size], tokenizer.pad_token_id)
        rollout = generate(ids, mask)
        for rows in torch.arange(len(rollout), device=rollout.response_ids.device).split(KL_ROWS):
            part = rollout.select(rows)
            if reference_logits is None:
                kls.append(torch.zeros(len(part)))
                continue
            logits = response_logprobs(policy, part, temperature, return_logits=True).logits  # (b, T, V)
            kls.append(categorical_kl(logits, reference_logits(part), part.response_mask).cpu())  # (b,)
        lengths.append(rollout.lengths().float().cpu())
        completions += decode_responses(tokenizer, rollout)
    return Samples(completions, torch.cat(kls), torch.cat(lengths))


def win_rate(gold: torch.Tensor, baseline: torch.Tensor) -> float:
    """Share of prompts where `gold` beats `baseline` (ties count half), both (B,)."""
    return ((gold > baseline).float() + 0.5 * (gold == baseline).float()).mean().item()


def summarize(
    samples: Samples,
    proxy: torch.Tensor | None,
    gold: torch.Tensor | None,
    baseline_gold: torch.Tensor | None,
) -> dict[str, float]:
    """reward (proxy, unless None), kl, length, and with a gold scorer: gold, and win_rate against
    `baseline_gold`."""
    metrics = {} if proxy is None else {"reward": proxy.mean().item()}
    metrics |= {"kl": samples.kl.mean().item(), "length": samples.length.mean().item()}
    if gold is not None:
        metrics["gold"] = gold.mean().item()
        if baseline_gold is not None:
            metrics["win_rate"] = win_rate(gold.cpu(), baseline_gold.cpu())
    return metrics
