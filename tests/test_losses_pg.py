"""The newer policy-gradient losses (rlhf_lab.losses.pg: Dr. GRPO, DAPO, GSPO, REINFORCE++), each against
a hand-computed example and a loop reference written here: a Python loop over sequences and tokens with
scalar torch ops, so that the gradients are compared too."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from rlhf_lab.losses import (
    dapo_loss,
    dr_grpo_advantages,
    dr_grpo_loss,
    grpo_loss,
    gspo_loss,
    ppo_policy_loss,
    reinforce_pp_advantages,
    varied_groups,
)


def lengths_mask(lengths: list[int], t: int) -> torch.Tensor:
    return (torch.arange(t) < torch.tensor(lengths).unsqueeze(-1)).float()  # (B, T)


def clipped_term(ratio, adv, low: float, high: float):
    """min(ρA, clip(ρ, 1 − low, 1 + high)A) of scalars."""
    return torch.minimum(ratio * adv, torch.clamp(ratio, 1 - low, 1 + high) * adv)


def k3(logp, ref):
    log_r = ref - logp
    return torch.exp(log_r) - 1 - log_r


def random_batch(seed: int, lengths: list[int], width: int = 5):
    """Log-probs (B, T) with gradient, old and reference log-probs near them, the mask, (B,) advantages."""
    g = torch.Generator().manual_seed(seed)
    n = len(lengths)
    logprobs = (-1 - torch.rand(n, width, generator=g)).requires_grad_()
    old = logprobs.detach() + 0.3 * torch.randn(n, width, generator=g)  # ratios well outside ±0.2
    ref = logprobs.detach() + 0.3 * torch.randn(n, width, generator=g)
    return logprobs, old, ref, lengths_mask(lengths, width), torch.randn(n, generator=g)


def grad_of(loss, logprobs):
    return torch.autograd.grad(loss, logprobs)[0]


# ------------------------------------------------------------------------------------- advantages


def test_dr_grpo_advantages_are_centered_not_scaled():
    scores = torch.tensor([1.0, 2.0, 4.0, 7.0])
    torch.testing.assert_close(dr_grpo_advantages(scores, 2), torch.tensor([-0.5, 0.5, -1.5, 1.5]))
    torch.testing.assert_close(dr_grpo_advantages(scores, 4), torch.tensor([-2.5, -1.5, 0.5, 3.5]))
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(12, generator=g)
    expected = [s - statistics.fmean(group) for group in scores.view(3, 4).tolist() for s in group]
    torch.testing.assert_close(dr_grpo_advantages(scores, 4), torch.tensor(expected))


def test_varied_groups_leave_out_groups_of_equal_rewards():
    scores = torch.tensor([1.0, 1.0, 2.0, 3.0, 0.0, 0.0, -1.0, -1.0, -1.0])
    assert varied_groups(scores[:6], 2).tolist() == [False, False, True, True, False, False]
    assert varied_groups(scores[3:], 3).tolist() == [True] * 3 + [False] * 3


def test_reinforce_pp_advantages_by_hand():
    rewards = torch.tensor([[0.0, 0.5, 1.0], [2.0, 0.0, 9.0]])  # 9 sits on padding
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    to_go = [1.5, 1.5, 1.0, 2.0, 0.0]  # Σ_{s≥t} r_s of the real tokens
    mean, std = statistics.fmean(to_go), statistics.stdev(to_go)  # over the whole batch, unbiased
    expected = torch.tensor(
        [[(v - mean) / std for v in to_go[:3]], [*((v - mean) / std for v in to_go[3:]), 0]]
    )
    torch.testing.assert_close(reinforce_pp_advantages(rewards, mask), expected, atol=1e-5, rtol=0)


def test_reinforce_pp_advantages_against_a_loop():
    g = torch.Generator().manual_seed(1)
    rewards, mask = torch.randn(4, 6, generator=g), lengths_mask([6, 2, 4, 1], 6)
    to_go = {}
    for i in range(4):
        running = 0.0
        for t in reversed(range(int(mask[i].sum()))):
            running += rewards[i, t].item()
            to_go[i, t] = running
    mean, std = statistics.fmean(to_go.values()), statistics.stdev(to_go.values())
    expected = torch.zeros(4, 6)
    for (i, t), v in to_go.items():
        expected[i, t] = (v - mean) / std
    torch.testing.assert_close(reinforce_pp_advantages(rewards, mask), expected, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------ Dr. GRPO


def dr_grpo_loop(logprobs, old, ref, mask, adv, constant, clip, beta):
    total = 0.0
    for i in range(logprobs.shape[0]):
        for t in range(int(mask[i].sum())):
            ratio = torch.exp(logprobs[i, t] - old[i, t])
            total = (
                total
                + (clipped_term(ratio, adv[i], clip, clip) - beta * k3(logprobs[i, t], ref[i, t])) / constant
            )
    return -total / logprobs.shape[0]


def test_dr_grpo_loss_by_hand_removes_the_length_bias():
    logprobs = torch.full((2, 3), -1.0, requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    adv = torch.tensor([1.0, -0.5])
    loss, stats = dr_grpo_loss(logprobs, logprobs.detach(), logprobs.detach(), adv, mask, constant=4)
    # at ρ = 1: sequence 0 sums 1 + 1 over C = 4, sequence 1 −0.5 over 4; then the mean over 2 sequences
    assert loss.item() == pytest.approx(-(2 / 4 - 0.5 / 4) / 2)
    # every token weighs 1/(B·C): its gradient is −A/(2·4), whatever its response's length
    torch.testing.assert_close(grad_of(loss, logprobs), torch.tensor([[-1, -1, 0], [0.5, 0, 0]]) / 8)
    # GRPO divides by each length instead: per unit of advantage, the one-token response weighs twice as much
    grpo, _ = grpo_loss(logprobs, logprobs.detach(), logprobs.detach(), adv, mask, beta=0.0)
    torch.testing.assert_close(grad_of(grpo, logprobs), torch.tensor([[-0.5, -0.5, 0], [0.5, 0, 0]]) / 2)
    assert stats["clip_fraction"] == 0 and stats["ratio_mean"] == 1 and stats["ratio_max"] == 1


@pytest.mark.parametrize("beta", [0.0, 0.1])
def test_dr_grpo_loss_against_a_loop(beta):
    logprobs, old, ref, mask, adv = random_batch(2, [5, 2, 3, 1])
    loss, stats = dr_grpo_loss(logprobs, old, ref, adv, mask, constant=6, beta=beta)
    reference = dr_grpo_loop(logprobs, old, ref, mask, adv, 6, 0.2, beta)
    torch.testing.assert_close(loss, reference)
    torch.testing.assert_close(grad_of(loss, logprobs), grad_of(reference, logprobs))
    kl = sum(k3(logprobs[i, t], ref[i, t]).item() for i in range(4) for t in range(int(mask[i].sum())))
    assert stats["kl"].item() == pytest.approx(kl / 6 / 4, rel=1e-5)
    assert 0 < stats["clip_fraction"] < 1
    with pytest.raises(ValueError, match="positive constant"):
        dr_grpo_loss(logprobs, old, ref, adv, mask, constant=0)


# --------------------------------------------------------------------------------------------- DAPO


def test_dapo_loss_by_hand_clips_higher_and_averages_tokens():
    old = torch.zeros(2, 2)
    logprobs = torch.tensor([[math.log(1.25), 0.0], [math.log(0.7), 0.0]]).requires_grad_()
    mask = torch.tensor([[1, 1], [1, 0]])
    adv = torch.tensor([1.0, -1.0])
    loss, stats = dapo_loss(logprobs, old, old, adv, mask, clip_low=0.2, clip_high=0.28)
    # 1.25 lies inside (0.8, 1.28): kept; 0.7·(−1) is clipped to 0.8·(−1); a mean over the 3 tokens
    assert loss.item() == pytest.approx(-(1.25 + 1.0 - 0.8) / 3, rel=1e-6)
    assert stats["clip_fraction"].item() == pytest.approx(1 / 3)
    assert stats["ratio_mean"].item() == pytest.approx((1.25 + 1.0 + 0.7) / 3, rel=1e-6)
    assert stats["ratio_max"].item() == pytest.approx(1.25, rel=1e-6)
    torch.testing.assert_close(grad_of(loss, logprobs), torch.tensor([[-1.25, -1.0], [0.0, 0.0]]) / 3)
    symmetric, _ = dapo_loss(logprobs, old, old, adv, mask, clip_low=0.2, clip_high=0.2)
    assert symmetric.item() == pytest.approx(-(1.2 + 1.0 - 0.8) / 3, rel=1e-6)  # 1.25 clipped at 1.2


@pytest.mark.parametrize("beta", [0.0, 0.1])
def test_dapo_loss_against_a_loop(beta):
    logprobs, old, ref, mask, adv = random_batch(3, [5, 2, 3, 1])
    loss, stats = dapo_loss(logprobs, old, ref, adv, mask, clip_low=0.2, clip_high=0.28, beta=beta)
    total, tokens = 0.0, 0
    for i in range(4):
        for t in range(int(mask[i].sum())):
            ratio = torch.exp(logprobs[i, t] - old[i, t])
            total = total + clipped_term(ratio, adv[i], 0.2, 0.28) - beta * k3(logprobs[i, t], ref[i, t])
            tokens += 1
    reference = -total / tokens  # one mean over every token of the batch
    torch.testing.assert_close(loss, reference)
    torch.testing.assert_close(grad_of(loss, logprobs), grad_of(reference, logprobs))
    # its surrogate is PPO's with a decoupled range: the same token mean
    ppo, _ = ppo_policy_loss(logprobs, old, adv, mask, clip=0.2, clip_high=0.28)
    if beta == 0:
        torch.testing.assert_close(loss, ppo)


# --------------------------------------------------------------------------------------------- GSPO


def test_gspo_loss_by_hand_clips_whole_sequences():
    old = torch.zeros(3, 2)
    log_ratio = torch.tensor([[0.0001, -0.0001], [0.0, 0.003], [-0.002, 0.0]])
    logprobs = log_ratio.clone().requires_grad_()
    mask = torch.ones(3, 2)
    adv = torch.tensor([1.0, 1.0, -1.0])
    loss, stats = gspo_loss(logprobs, old, adv, mask, clip_low=3e-4, clip_high=4e-4)
    s = log_ratio.mean(-1).exp()  # (1, 1.0015, 0.999): sequences 1 and 2 leave (0.9997, 1.0004)
    expected = -(s[0] * 1 + 1.0004 * 1 + 0.9997 * -1) / 3
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert stats["clip_fraction"].item() == pytest.approx(2 / 3)
    assert stats["ratio_max"].item() == pytest.approx(s[1].item(), rel=1e-6)
    # a clipped sequence gives none of its tokens a gradient, even token (1, 0) whose own ratio is 1;
    # the kept one gives each token −A·s/(|y|·B)
    grad = grad_of(loss, logprobs)
    torch.testing.assert_close(grad, torch.tensor([[-1.0, -1.0], [0.0, 0.0], [0.0, 0.0]]) * s[0] / 6)
    token_level, _ = ppo_policy_loss(logprobs, old, adv, mask, clip=3e-4, clip_high=4e-4)
    assert grad_of(token_level, logprobs)[1, 0] != 0  # per-token clipping would train it


def test_gspo_loss_against_a_loop():
    logprobs, old, ref, mask, adv = random_batch(4, [5, 2, 3, 1])
    old = logprobs.detach() + 0.01 * (old - logprobs.detach())  # sequence ratios around the clip range
    loss, stats = gspo_loss(logprobs, old, adv, mask, clip_low=3e-4, clip_high=4e-4)
    total = 0.0
    for i in range(4):
        n = int(mask[i].sum())
        seq_ratio = torch.exp(sum(logprobs[i, t] - old[i, t] for t in range(n)) / n)
        total = total + clipped_term(seq_ratio, adv[i], 3e-4, 4e-4)
    reference = -total / 4
    torch.testing.assert_close(loss, reference)
    torch.testing.assert_close(grad_of(loss, logprobs), grad_of(reference, logprobs))
    assert 0 < stats["clip_fraction"] < 1


# ------------------------------------------------------------------------------------ the ratios


def test_ratio_metrics_and_padding_invariance():
    logprobs, old, ref, mask, adv = random_batch(5, [5, 2, 3, 1])
    pad = mask == 0
    junk = torch.where(pad, torch.tensor(40.0), logprobs.detach())  # a huge ratio on padding
    for loss_fn in (
        lambda lp, o: dr_grpo_loss(lp, o, ref, adv, mask, constant=5, beta=0.1),
        lambda lp, o: dapo_loss(lp, o, ref, adv, mask, beta=0.1),
        lambda lp, o: gspo_loss(lp, o, adv, mask),
        lambda lp, o: ppo_policy_loss(lp, o, adv, mask),
    ):
        loss, stats = loss_fn(logprobs.detach(), old)
        loss_junk, stats_junk = loss_fn(junk, torch.where(pad, -40.0, old))
        torch.testing.assert_close(loss, loss_junk)
        assert all(torch.allclose(stats[k], stats_junk[k]) for k in stats)
        assert stats["ratio_max"] >= stats["ratio_mean"] > 0
    ratios = torch.exp(logprobs.detach() - old)[mask.bool()]
    _, stats = ppo_policy_loss(logprobs.detach(), old, adv, mask)
    assert stats["ratio_max"].item() == pytest.approx(ratios.max().item(), rel=1e-6)
    assert stats["ratio_mean"].item() == pytest.approx(ratios.mean().item(), rel=1e-6)
