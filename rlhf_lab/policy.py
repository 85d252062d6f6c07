"""What the stages that train a policy on its own samples (RL, online and offline DPO) share: the
prompts of each step, the frozen reference, micro-batches of a step's rows, and wall time per phase."""

from __future__ import annotations

import copy
import functools
import time
from contextlib import contextmanager

import torch
from torch import nn

from rlhf_lab.rollout import Rollout, response_logprobs
from rlhf_lab.seeds import derive_seed


class PromptStream:
    """The prompts of each RL step as a pure function of (seed, step, rank): shuffled passes over the
    prompt set, one after another. Resuming needs only the step number."""

    def __init__(self, num_prompts: int, per_step: int, seed: int):
        self.num_prompts, self.per_step, self.seed = num_prompts, per_step, seed

    def batch(self, step: int, rank: int = 0, world_size: int = 1) -> list[int]:
        """Prompt indices of `step` on `rank`: each rank gets its own `per_step` prompts."""
        start = (step * world_size + rank) * self.per_step
        return [self._at(i) for i in range(start, start + self.per_step)]

    def _at(self, i: int) -> int:
        epoch, position = divmod(i, self.num_prompts)
        return self._order(epoch)[position]

    @functools.lru_cache(maxsize=4)  # noqa: B019 (one stream per run)
    def _order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, "prompt_order", epoch))
        return torch.randperm(self.num_prompts, generator=generator).tolist()


class Reference:
    """π_ref: a frozen copy of the starting policy, or the LoRA policy with its adapter disabled.

    Kept out of the LightningModule's state dict: it never changes, so checkpoints need not carry it.
    """

    def __init__(self, policy: nn.Module):
        self.copy = None
        if not hasattr(policy, "disable_adapter"):
            self.copy = copy.deepcopy(policy).eval().requires_grad_(False)

    @torch.no_grad()
    def __call__(self, policy: nn.Module, rollout: Rollout, temperature: float, **kwargs):
        """response_logprobs of π_ref (same options), on the policy's device."""
        if self.copy is None:
            with policy.disable_adapter():
                return response_logprobs(policy, rollout, temperature, **kwargs)
        self.copy.to(next(policy.parameters()).device)
        return response_logprobs(self.copy, rollout, temperature, **kwargs)


# ---------------------------------------------------------------------------------- micro-batches
def micro_batches(lengths: torch.Tensor, budget: int, agree=lambda count: count) -> list[torch.Tensor]:
    """Row indices in groups of about `budget` tokens at most (lengths (N,): tokens of each row), as even
    as the rows allow: ceil(total / budget) groups (`agree` may raise that count, e.g. to the largest
    over DDP ranks), filled longest row first, each into the group with the fewest tokens. budget 0 =
    one group."""
    n = len(lengths)
    count = 1 if budget == 0 else -(-int(lengths.sum()) // budget)
    count = max(1, min(agree(count), n))
    if count == 1:
        return [torch.arange(n, device=lengths.device)]
    groups: list[list[int]] = [[] for _ in range(count)]
    load = [0] * count
    for i in lengths.argsort(descending=True, stable=True).tolist():
        g = load.index(min(load))
        groups[g].append(i)
        load[g] += int(lengths[i])
    return [torch.tensor(sorted(g), device=lengths.device) for g in groups]


def in_parts(rollout: Rollout, fn, budget: int):
    """fn(rollout) computed over micro-batches of about `budget` tokens and reassembled in row order:
    (N, ...) tensors, or a tuple of them (None entries stay None)."""
    parts = micro_batches(rollout.attention_mask.sum(1), budget)
    if len(parts) == 1:
        return fn(rollout)
    outputs = [fn(rollout.select(index)) for index in parts]
    order = torch.cat(parts).argsort()  # (N,) where each row landed

    def join(pieces):
        return None if pieces[0] is None else torch.cat(pieces)[order]

    if isinstance(outputs[0], tuple):
        return tuple(join(list(pieces)) for pieces in zip(*outputs, strict=True))
    return join(outputs)


class Timer:
    """Wall seconds per phase; waits for the GPU so that each phase is charged its own kernels."""

    def __init__(self, device: torch.device):
        self.device, self.seconds = device, {}

    @contextmanager
    def __call__(self, phase: str):
        self._sync()
        start = time.perf_counter()
        yield
        self._sync()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
