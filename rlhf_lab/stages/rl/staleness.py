"""Stale rollouts (Noukhovitch et al. 2025, "Asynchronous RLHF"): with rl.staleness=k the rollouts of step
t are sampled by the policy of step t − k, the weights it had before the update of step t − k (those of
step 0 for the first k steps). k = 1 is the one-step-off schedule of asynchronous trainers (verl,
OpenRLHF, TRL's async GRPO), whose generation of step t + 1 runs while step t trains.

Here the schedule is exact and sequential: the lagged weights are swapped into the policy for its
generation and the current ones put back, so the numbers are those of an asynchronous run, without its
overlap of generation and training (on 2 CPU cores there is nothing to overlap with). The last k steps'
trainable weights are kept (k copies of them: of a LoRA policy, its adapter only) and checkpointed, so a
resumed run samples with the same weights.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

Weights = dict[str, torch.Tensor]


def trainable(policy: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters an update can change (a LoRA policy's adapter; every weight of a full one)."""
    return {name: p for name, p in policy.named_parameters() if p.requires_grad}


@torch.no_grad()
def snapshot(policy: nn.Module) -> Weights:
    return {name: p.detach().clone() for name, p in trainable(policy).items()}


@torch.no_grad()
def load(policy: nn.Module, weights: Weights) -> None:
    """Copy `weights` into the policy's trainable parameters, in place (the optimizer keeps its tensors)."""
    for name, p in trainable(policy).items():
        p.copy_(weights[name])


class StaleWeights:
    """The trainable weights of the policy at the last k steps, oldest first."""

    def __init__(self, k: int):
        self.k, self.queue = k, deque()

    @contextmanager
    def sampler(self, policy: nn.Module) -> Iterator[None]:
        """Inside, the policy holds the weights of step t − k (at step t, before its update); after, its
        own again, and they are kept for step t + k. Nothing happens at k = 0."""
        if self.k == 0:
            yield
            return
        current = snapshot(policy)
        if self.queue:  # before step 1 the oldest weights are the current ones
            load(policy, self.queue[0])
        try:
            yield
        finally:
            load(policy, current)
        self.queue.append(current)
        while len(self.queue) > self.k:
            self.queue.popleft()

    def state_dict(self) -> list[Weights]:
        return list(self.queue)

    def load_state_dict(self, queue: list[Weights]) -> None:
        self.queue = deque(queue)
