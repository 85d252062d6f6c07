"""The losses of 2025 (rlhf_lab.losses.importance: CISPO, GMPO, SAPO) and the sampler–learner corrections
(truncated and masked importance sampling), each against a hand-computed example and a loop reference
written here: a Python loop over sequences and tokens with scalar torch ops, so that gradients are
compared too."""

from __future__ import annotations

import math

import pytest
import torch

from rlhf_lab.losses import (
    cispo_loss,
    dapo_loss,
    gmpo_loss,
    grpo_loss,
    gspo_loss,
    off_policy_weights,
    ppo_policy_loss,
    sapo_loss,
    weigh,
)


def lengths_mask(lengths: list[int], t: int) -> torch.Tensor:
    return (torch.arange(t) < torch.tensor(lengths).unsqueeze(-1)).float()  # (B, T)


def random_batch(seed: int, lengths: list[int], width: int = 5, spread: float = 0.5):
    """Log-probs (B, T) with gradient, old log-probs `spread` nats around them, the mask, (B,) advantages."""
    g = torch.Generator().manual_seed(seed)
    n = len(lengths)
    logprobs = (-1 - torch.rand(n, width, generator=g)).requires_grad_()
    old = logprobs.detach() + spread * torch.randn(n, width, generator=g)
    return logprobs, old, lengths_mask(lengths, width), torch.randn(n, generator=g)


def grad_of(loss, logprobs):
    return torch.autograd.grad(loss, logprobs)[0]


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# -------------------------------------------------------------------------------------------- CISPO
def test_cispo_by_hand_clips_the_weight_and_keeps_every_token():
    old = torch.zeros(2, 2)
    log_ratio = torch.tensor([[math.log(1.5), math.log(0.5)], [math.log(1.1), 0.0]])
    logprobs = log_ratio.clone().requires_grad_()
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    adv = torch.tensor([2.0, -1.0])
    loss, stats = cispo_loss(logprobs, old, adv, mask, clip_low=0.2, clip_high=0.28)
    weights = [1.28, 0.8, 1.1]  # 1.5 and 0.5 clipped to [0.8, 1.28], 1.1 kept
    terms = [weights[0] * 2 * math.log(1.5), weights[1] * 2 * math.log(0.5), weights[2] * -1 * math.log(1.1)]
    assert loss.item() == pytest.approx(-sum(terms) / 3, rel=1e-6)  # a token mean over 3 tokens
    assert stats["clip_fraction"].item() == pytest.approx(2 / 3)
    # every token keeps the gradient −w·A/3 (of log π), the clipped ones included
    expected = torch.tensor([[-1.28 * 2 / 3, -0.8 * 2 / 3], [1.1 / 3, 0.0]])
    torch.testing.assert_close(grad_of(loss, logprobs), expected)
    ppo, _ = ppo_policy_loss(logprobs, old, adv, mask, clip=0.2, clip_high=0.28)
    assert grad_of(ppo, logprobs)[0, 0] == 0  # PPO drops the token whose ratio left the range upward


def test_cispo_without_a_lower_bound_caps_only_from_above():
    old = torch.zeros(1, 3)
    logprobs = torch.tensor([[math.log(7.0), math.log(0.01), 0.0]])
    loss, stats = cispo_loss(logprobs, old, torch.tensor([1.0]), torch.ones(1, 3))  # ε_low 1, ε_high 4
    expected = -(5.0 * math.log(7.0) + 0.01 * math.log(0.01)) / 3  # 7 capped at 5; 0.01 kept as it is
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert stats["clip_fraction"].item() == pytest.approx(1 / 3)


def test_cispo_against_a_loop():
    logprobs, old, mask, adv = random_batch(0, [5, 2, 3, 1])
    loss, _ = cispo_loss(logprobs, old, adv, mask, clip_low=0.2, clip_high=0.28)
    total, count = 0.0, 0
    for i in range(4):
        for t in range(int(mask[i].sum())):
            ratio = torch.exp(logprobs[i, t].detach() - old[i, t])
            total = total + torch.clamp(ratio, 0.8, 1.28) * adv[i] * logprobs[i, t]
            count += 1
    reference = -total / count
    torch.testing.assert_close(loss, reference)
    torch.testing.assert_close(grad_of(loss, logprobs), grad_of(reference, logprobs))


# --------------------------------------------------------------------------------------------- GMPO
def test_gmpo_by_hand_takes_the_geometric_mean_of_ratios_clipped_in_log_space():
    old = torch.zeros(3, 2)
    log_ratio = torch.tensor([[0.1, 0.6], [-0.6, 0.2], [-0.6, 0.0]])
    logprobs = log_ratio.clone().requires_grad_()
    mask = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    adv = torch.tensor([1.0, -2.0, 0.5])
    loss, stats = gmpo_loss(logprobs, old, adv, mask, clip_low=0.4, clip_high=0.4)
    # A > 0: min(x, clip x), so 0.6 → 0.4 and −0.6 stays; A < 0: max(x, clip x), so −0.6 → −0.4
    s = [math.exp((0.1 + 0.4) / 2), math.exp((-0.4 + 0.2) / 2), math.exp(-0.6)]
    assert loss.item() == pytest.approx(-(1 * s[0] - 2 * s[1] + 0.5 * s[2]) / 3, rel=1e-6)
    assert stats["clip_fraction"].item() == pytest.approx(2 / 5)
    # a clipped token has no gradient; a kept one −A·s/(|y|·B)
    expected = torch.tensor([[-s[0] / 6, 0.0], [0.0, 2 * s[1] / 6], [-0.5 * s[2] / 3, 0.0]])
    torch.testing.assert_close(grad_of(loss, logprobs), expected)


def test_gmpo_against_a_loop():
    logprobs, old, mask, adv = random_batch(1, [5, 2, 3, 1], spread=0.4)
    loss, _ = gmpo_loss(logprobs, old, adv, mask, clip_low=0.3, clip_high=0.4)
    total = 0.0
    for i in range(4):
        n, sign = int(mask[i].sum()), torch.sign(adv[i])
        logs = []
        for t in range(n):
            x = logprobs[i, t] - old[i, t]
            logs.append(sign * torch.minimum(sign * x, sign * torch.clamp(x, -0.3, 0.4)))
        total = total + adv[i] * torch.exp(sum(logs) / n)
    reference = -total / 4
    torch.testing.assert_close(loss, reference)
    torch.testing.assert_close(grad_of(loss, logprobs), grad_of(reference, logprobs))


# --------------------------------------------------------------------------------------------- SAPO
def test_sapo_by_hand_gates_softly():
    old = torch.zeros(2, 2)
    ratios = [[1.0, 1.5], [0.8, 3.0]]
    logprobs = torch.tensor(ratios).log().requires_grad_()
    adv = torch.tensor([1.0, -1.0])
    loss, stats = sapo_loss(logprobs, old, adv, torch.ones(2, 2), tau_pos=1.0, tau_neg=1.05)

    def gate(r, tau):  # f(ρ) = σ(τ(ρ − 1))·4/τ and its slope f'(ρ) = 4σ(1 − σ)
        p = sigmoid(tau * (r - 1))
        return p * 4 / tau, 4 * p * (1 - p)

    (f00, d00), (f01, d01) = gate(1.0, 1.0), gate(1.5, 1.0)
    (f10, d10), (f11, d11) = gate(0.8, 1.05), gate(3.0, 1.05)
    assert loss.item() == pytest.approx(-((f00 + f01) / 2 - (f10 + f11) / 2) / 2, rel=1e-6)
    # ∂/∂log π = f'(ρ)·ρ·A / (|y|·B): 1·1·1/4 at ρ = 1, as GRPO's; the gate fades further out
    expected = torch.tensor([[-d00 * 1.0, -d01 * 1.5], [d10 * 0.8, d11 * 3.0]]) / 4
    torch.testing.assert_close(grad_of(loss, logprobs), expected)
    assert d00 == 1.0 and d11 < 0.5  # at ρ = 3 less than half the gradient passes
    assert stats["clip_fraction"].item() == pytest.approx(1 / 4)
    assert stats["gate_mean"].item() == pytest.approx((d00 + d01 + d10 + d11) / 4, rel=1e-6)


def test_sapo_against_a_loop():
    logprobs, old, mask, adv = random_batch(2, [5, 2, 3, 1])
    loss, _ = sapo_loss(logprobs, old, adv, mask, tau_pos=2.0, tau_neg=3.0)
    total = 0.0
    for i in range(4):
        n = int(mask[i].sum())
        tau = 2.0 if adv[i] > 0 else 3.0
        gates = [torch.sigmoid(tau * (torch.exp(logprobs[i, t] - old[i, t]) - 1)) * 4 / tau for t in range(n)]
        total = total + adv[i] * sum(gates) / n
    reference = -total / 4
    torch.testing.assert_close(loss, reference)
    torch.testing.assert_close(grad_of(loss, logprobs), grad_of(reference, logprobs))


def test_on_policy_each_new_loss_has_its_familys_gradient():
    """At ρ = 1 nothing is clipped or gated: CISPO's gradient is the token-mean surrogate's (DAPO's), SAPO's
    and GMPO's the sequence-mean surrogate's (GRPO's, also GSPO's)."""
    logprobs, _, mask, adv = random_batch(3, [5, 2, 3, 1])
    old = logprobs.detach()
    ref = old  # no KL term (β = 0 below)
    token_mean = grad_of(dapo_loss(logprobs, old, ref, adv, mask, beta=0.0)[0], logprobs)
    seq_mean = grad_of(grpo_loss(logprobs, old, ref, adv, mask, beta=0.0)[0], logprobs)
    torch.testing.assert_close(grad_of(cispo_loss(logprobs, old, adv, mask)[0], logprobs), token_mean)
    torch.testing.assert_close(grad_of(sapo_loss(logprobs, old, adv, mask)[0], logprobs), seq_mean)
    torch.testing.assert_close(grad_of(gmpo_loss(logprobs, old, adv, mask)[0], logprobs), seq_mean)
    torch.testing.assert_close(grad_of(gspo_loss(logprobs, old, adv, mask)[0], logprobs), seq_mean)


def test_padding_changes_nothing():
    logprobs, old, mask, adv = random_batch(4, [5, 2, 3, 1])
    pad = mask == 0
    junk, junk_old = torch.where(pad, 40.0, logprobs.detach()), torch.where(pad, -40.0, old)
    for loss_fn in (cispo_loss, gmpo_loss, sapo_loss):
        loss, stats = loss_fn(logprobs.detach(), old, adv, mask)
        loss_junk, stats_junk = loss_fn(junk, junk_old, adv, mask)
        torch.testing.assert_close(loss, loss_junk)
        assert all(torch.allclose(stats[k], stats_junk[k]) for k in stats), loss_fn.__name__


# ------------------------------------------------------------------------------------- corrections
def test_tis_caps_each_token_weight():
    sampler = torch.zeros(2, 3)
    old = torch.tensor([[3.0, 0.5, 1.5], [2.0, 1.0, 9.0]]).log()  # π_old/π_sampler; 9 sits on padding
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    weights, stats = off_policy_weights(old, sampler, mask, "tis", "token", cap=2.0)
    expected = torch.tensor([[2.0, 0.5, 1.5], [2.0, 1.0, 1.0]])  # 3 capped at 2; padding neutral
    torch.testing.assert_close(weights, expected)
    assert stats["clipped_share"].item() == pytest.approx(1 / 5)  # only 3 exceeds the cap (2 does not)
    assert stats["weight_max"].item() == pytest.approx(2.0)
    assert stats["weight_mean"].item() == pytest.approx((2 + 0.5 + 1.5 + 2 + 1) / 5, rel=1e-6)


def test_tis_at_sequence_level_caps_the_product_of_the_ratios():
    sampler = torch.zeros(2, 2)
    old = torch.tensor([[1.5, 1.5], [0.5, 1.0]]).log()
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    weights, stats = off_policy_weights(old, sampler, mask, "tis", "sequence", cap=2.0)
    torch.testing.assert_close(weights, torch.tensor([2.0, 0.5]))  # 2.25 capped at 2
    assert stats["clipped_share"].item() == pytest.approx(2 / 3)  # the capped sequence's 2 of 3 tokens


def test_mis_drops_what_leaves_the_threshold():
    sampler = torch.zeros(1, 4)
    old = torch.tensor([[3.0, 0.5, 1.5, 0.4]]).log()
    weights, stats = off_policy_weights(old, sampler, torch.ones(1, 4), "mis", "token", threshold=2.0)
    torch.testing.assert_close(weights, torch.tensor([[0.0, 0.5, 1.5, 0.0]]))  # [1/2, 2] kept, bounds in
    assert stats["masked_share"].item() == pytest.approx(2 / 4)
    old = torch.tensor([[1.5, 1.5], [1.2, 1.0]]).log()
    weights, stats = off_policy_weights(old, torch.zeros(2, 2), torch.ones(2, 2), "mis", "sequence", 1.0, 2.0)
    torch.testing.assert_close(weights, torch.tensor([0.0, 1.2]))  # 2.25 leaves [1/2, 2]: dropped whole
    assert stats["masked_share"].item() == pytest.approx(2 / 4)


@pytest.mark.parametrize("correction", ["tis", "mis"])
@pytest.mark.parametrize("level", ["token", "sequence"])
def test_corrections_against_a_loop(correction, level):
    _, old, mask, _ = random_batch(5, [5, 2, 3, 1], spread=0.6)
    sampler = old + 0.6 * torch.randn(old.shape, generator=torch.Generator().manual_seed(6))
    weights, _ = off_policy_weights(old, sampler, mask, correction, level, cap=1.5, threshold=1.8)

    def corrected(w: float) -> float:
        if correction == "tis":
            return min(w, 1.5)
        return w if 1 / 1.8 <= w <= 1.8 else 0.0

    for i in range(4):
        n = int(mask[i].sum())
        ratios = [math.exp(old[i, t].item() - sampler[i, t].item()) for t in range(n)]
        if level == "sequence":
            assert weights[i].item() == pytest.approx(corrected(math.prod(ratios)), rel=1e-5)
        else:
            assert weights[i, :n].tolist() == pytest.approx([corrected(r) for r in ratios], rel=1e-5)


@pytest.mark.parametrize("correction", ["tis", "mis"])
@pytest.mark.parametrize("level", ["token", "sequence"])
def test_with_the_samplers_own_logprobs_every_weight_is_exactly_one(correction, level):
    logprobs, _, mask, adv = random_batch(7, [5, 2, 3, 1])
    old = logprobs.detach()
    weights, stats = off_policy_weights(old, old.clone(), mask, correction, level)
    assert weights.eq(1).all()
    unchanged = adv if level == "sequence" else adv.unsqueeze(-1).expand_as(weights)  # (B,) or (B, T)
    assert torch.equal(weigh(adv, weights), unchanged)
    share = stats["clipped_share" if correction == "tis" else "masked_share"]
    assert stats["weight_mean"] == 1 and share == 0


def test_a_weight_on_the_advantage_weighs_each_losss_term():
    """Every loss scales with a non-negative weight on its advantage, so weighting the advantages weighs
    the terms: a sequence weight of 0 removes its sequence's gradient, of 2 doubles it."""
    logprobs, old, mask, adv = random_batch(8, [5, 2, 3, 1], spread=0.3)
    seq_weights = torch.tensor([0.0, 2.0, 1.0, 1.0])
    for loss_fn in (cispo_loss, gmpo_loss, sapo_loss, lambda *a: ppo_policy_loss(*a, clip=0.2)):
        plain = grad_of(loss_fn(logprobs, old, adv, mask)[0], logprobs)
        weighted = grad_of(loss_fn(logprobs, old, weigh(adv, seq_weights), mask)[0], logprobs)
        torch.testing.assert_close(weighted, plain * seq_weights.unsqueeze(-1))
    token_weights = torch.rand(4, 5, generator=torch.Generator().manual_seed(9))
    for loss_fn in (cispo_loss, sapo_loss):
        plain = grad_of(loss_fn(logprobs, old, adv.unsqueeze(-1).expand(4, 5), mask)[0], logprobs)
        weighted = grad_of(loss_fn(logprobs, old, weigh(adv, token_weights), mask)[0], logprobs)
        torch.testing.assert_close(weighted, plain * token_weights)
