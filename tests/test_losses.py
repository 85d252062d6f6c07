"""Pure functions: the causal-LM loss with response-only labels, and the learning-rate schedule."""

from __future__ import annotations

import math

import pytest
import torch

from rlhf_lab.losses import IGNORE, causal_lm_loss, token_nll
from rlhf_lab.optim import lr_multiplier


def test_response_only_loss_matches_hand_computation():
    # vocabulary of 2; logits at position t predict token t+1
    logits = torch.tensor([[[0.0, 0.0], [2.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])  # (1, 4, 2)
    ids = torch.tensor([[1, 0, 1, 0]])
    labels = torch.tensor([[IGNORE, IGNORE, 1, 0]])  # prompt = first two tokens
    # trained predictions: position 1 -> token 1, position 2 -> token 0
    expected = (
        -math.log(math.exp(0) / (math.exp(2) + math.exp(0)))
        - math.log(math.exp(0) / (math.exp(0) + math.exp(1)))
    ) / 2
    assert causal_lm_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    # with every token labelled, the first prediction (position 0 -> token 0) enters the mean too
    full = causal_lm_loss(logits, ids)
    assert full.item() == pytest.approx((expected * 2 + math.log(2)) / 3, rel=1e-6)


def test_prompt_and_padding_tokens_get_no_gradient():
    logits = torch.randn(2, 5, 7, requires_grad=True)
    labels = torch.tensor([[IGNORE, IGNORE, 3, 4, IGNORE], [IGNORE, 1, 2, 3, 4]])
    causal_lm_loss(logits, labels).backward()
    # a position's logits get gradient iff the *next* label is trained
    has_grad = logits.grad.abs().sum(-1) > 0  # (2, 5)
    expected = torch.tensor([[False, True, True, False, False], [True, True, True, True, False]])
    assert torch.equal(has_grad, expected)


def test_token_nll_sums_and_counts_for_exact_perplexity():
    logits, labels = torch.randn(3, 6, 11), torch.randint(0, 11, (3, 6))
    labels[0, :4] = IGNORE
    total, count = token_nll(logits, labels)
    assert count.item() == 3 * 5 - 3
    assert (total / count).item() == pytest.approx(causal_lm_loss(logits, labels).item(), rel=1e-6)


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    warm = [lr_multiplier(s, 10, 100, "cosine", 0.1) for s in range(10)]
    assert all(a < b for a, b in zip(warm, warm[1:], strict=False)) and warm[-1] < 1
    assert lr_multiplier(10, 10, 100, "cosine", 0.1) == pytest.approx(1.0)
    assert lr_multiplier(55, 10, 100, "cosine", 0.1) == pytest.approx(0.55)
    assert lr_multiplier(100, 10, 100, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_multiplier(55, 10, 100, "linear", 0.0) == pytest.approx(0.5)
    assert lr_multiplier(99, 10, 100, "constant", 0.1) == 1.0
