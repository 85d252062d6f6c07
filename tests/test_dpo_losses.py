"""The DPO family in rlhf_lab.losses against hand-computed values: DPO, conservative DPO, IPO, SimPO,
their gradients, and the reference held constant."""

from __future__ import annotations

import math

import pytest
import torch

from rlhf_lab.losses import cdpo_loss, dpo_logratio, dpo_loss, ipo_loss, simpo_loss


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_logratio_is_the_difference_of_the_two_log_ratios():
    # chosen: log π = -3, log π_ref = -4 (ratio +1); rejected: -5 against -4 (ratio -1): h = 2
    h = dpo_logratio(torch.tensor([-3.0]), torch.tensor([-5.0]), torch.tensor([-4.0]), torch.tensor([-4.0]))
    assert h.tolist() == [2.0]


def test_dpo_loss_by_hand():
    h = torch.tensor([1.0, -2.0])
    expected = -(log_sigmoid(0.5 * 1.0) + log_sigmoid(0.5 * -2.0)) / 2
    assert dpo_loss(h, beta=0.5).item() == pytest.approx(expected, rel=1e-6)
    assert dpo_loss(torch.zeros(3), beta=0.1).item() == pytest.approx(math.log(2), rel=1e-6)


def test_dpo_gradient_by_hand_and_the_reference_is_a_constant():
    chosen = torch.tensor([-3.0, -2.0], requires_grad=True)
    rejected = torch.tensor([-5.0, -1.0], requires_grad=True)
    ref_chosen = torch.tensor([-4.0, -2.0], requires_grad=True)
    ref_rejected = torch.tensor([-4.0, -2.0], requires_grad=True)
    beta = 0.5
    dpo_loss(dpo_logratio(chosen, rejected, ref_chosen, ref_rejected), beta).backward()
    h = [2.0, -1.0]  # (−3+4) − (−5+4), (−2+2) − (−1+2)
    # d/dh of −log σ(βh) is −β·σ(−βh); the mean over 2 pairs halves it
    expected = [-beta * (1 / (1 + math.exp(beta * x))) / 2 for x in h]
    assert chosen.grad.tolist() == pytest.approx(expected, rel=1e-6)
    assert rejected.grad.tolist() == pytest.approx([-g for g in expected], rel=1e-6)
    assert ref_chosen.grad is None and ref_rejected.grad is None


def test_conservative_dpo_by_hand_is_dpo_at_zero_noise_and_has_a_finite_minimum():
    h, beta, eps = torch.tensor([1.0, -2.0]), 0.5, 0.25
    expected = sum(-(1 - eps) * log_sigmoid(beta * x) - eps * log_sigmoid(-beta * x) for x in (1.0, -2.0)) / 2
    assert cdpo_loss(h, beta, eps).item() == pytest.approx(expected, rel=1e-6)
    assert cdpo_loss(h, beta, 0.0).item() == pytest.approx(dpo_loss(h, beta).item(), rel=1e-6)
    # the minimum over h: β·h = log((1 − ε)/ε), where the gradient vanishes (DPO's never does)
    h_star = torch.tensor([math.log((1 - eps) / eps) / beta], requires_grad=True)
    cdpo_loss(h_star, beta, eps).backward()
    assert h_star.grad.item() == pytest.approx(0.0, abs=1e-6)


def test_ipo_loss_by_hand():
    # τ = 0.1: the target log-ratio is 1/(2τ) = 5
    assert ipo_loss(torch.tensor([3.0, 7.0]), tau=0.1).item() == pytest.approx((4 + 4) / 2)
    assert ipo_loss(torch.tensor([5.0]), tau=0.1).item() == pytest.approx(0.0, abs=1e-6)


def test_simpo_loss_by_hand_is_length_normalized_and_needs_no_reference():
    # chosen: log π = -6 over 3 tokens (-2 per token); rejected: -8 over 2 tokens (-4 per token)
    chosen, rejected = torch.tensor([-6.0]), torch.tensor([-8.0])
    beta, gamma = 2.0, 1.0
    loss = simpo_loss(chosen, rejected, torch.tensor([3]), torch.tensor([2]), beta, gamma)
    assert loss.item() == pytest.approx(-log_sigmoid(2 * -2 - 2 * -4 - 1), rel=1e-6)  # −log σ(3)
    # the same per-token log-probs at other lengths give the same loss: only the average counts
    again = simpo_loss(
        torch.tensor([-12.0]), torch.tensor([-16.0]), torch.tensor([6]), torch.tensor([4]), 2.0, 1.0
    )
    assert again.item() == pytest.approx(loss.item(), rel=1e-6)
