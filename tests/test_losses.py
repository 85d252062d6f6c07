"""rlhf_lab.losses, the pure maths, against hand computations, loop references and exact distributions:
the causal-LM loss with response-only labels, Bradley–Terry and ranking losses, KL estimators,
advantages, policy and value losses, KL control and best-of-n."""

from __future__ import annotations

import math

import pytest
import torch

from rlhf_lab.losses import (
    AdaptiveKLController,
    FixedKLController,
    best_of_n_kl,
    bradley_terry_loss,
    causal_lm_loss,
    entropy_from_logprobs,
    explained_variance,
    gae,
    grpo_advantages,
    grpo_loss,
    kl_estimate,
    kl_penalized_rewards,
    pairwise_differences,
    ppo_policy_loss,
    reinforce_loss,
    rloo_advantages,
    token_nll,
    value_loss,
)
from rlhf_lab.tensors import IGNORE, masked_mean, masked_sum, masked_var, masked_whiten


def lengths_mask(lengths: list[int], t: int) -> torch.Tensor:
    return (torch.arange(t) < torch.tensor(lengths).unsqueeze(-1)).float()  # (B, T)


# ------------------------------------------------------------------ language model


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


# ------------------------------------------------------------------ reward model


def test_bradley_terry_loss_and_gradient_by_hand():
    chosen = torch.tensor([1.0, 0.0], requires_grad=True)
    rejected = torch.tensor([0.0, 2.0], requires_grad=True)
    loss = bradley_terry_loss(chosen - rejected)
    assert loss.item() == pytest.approx((math.log1p(math.exp(-1)) + math.log1p(math.exp(2))) / 2, rel=1e-6)
    loss.backward()
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    expected = torch.tensor([-sig(-1.0) / 2, -sig(2.0) / 2])  # −σ(−(r⁺ − r⁻))/N
    assert torch.allclose(chosen.grad, expected, atol=1e-6)
    assert torch.allclose(rejected.grad, -expected, atol=1e-6)


def test_bradley_terry_margin_shifts_the_difference():
    chosen, rejected = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    margin = torch.tensor([0.5, -1.0])
    expected = (math.log1p(math.exp(-(1 - 0.5))) + math.log1p(math.exp(-(-2 + 1)))) / 2
    assert bradley_terry_loss(chosen - rejected, margin).item() == pytest.approx(expected, rel=1e-6)
    # a positive margin demands a larger gap, so the loss grows; it acts like lowering chosen
    shifted = bradley_terry_loss(chosen - rejected, torch.tensor(0.3))
    assert shifted > bradley_terry_loss(chosen - rejected)
    assert torch.allclose(shifted, bradley_terry_loss((chosen - 0.3) - rejected))


def test_k_wise_ranking_loss_is_the_mean_of_its_pairwise_losses():
    g = torch.Generator().manual_seed(0)
    rewards = torch.randn(3, 4, generator=g)  # (B, K)
    rank = torch.stack([torch.randperm(4, generator=g) for _ in range(3)])  # (B, K), 0 = best
    prefers = rank.unsqueeze(-1) < rank.unsqueeze(-2)  # (B, K, K): a total order
    assert prefers.sum() == 3 * 6
    pairs = prefers.nonzero().tolist()
    chosen = torch.stack([rewards[b, i] for b, i, _ in pairs])
    rejected = torch.stack([rewards[b, j] for b, _, j in pairs])
    ranked = bradley_terry_loss(pairwise_differences(rewards), pairs=prefers)  # over (B, K, K) differences
    assert torch.allclose(ranked, bradley_terry_loss(chosen - rejected), atol=1e-6)

    partial = prefers & (torch.rand(3, 4, 4, generator=g) < 0.6)  # some comparisons missing
    keep = [k for k, (b, i, j) in enumerate(pairs) if partial[b, i, j]]
    assert 0 < len(keep) < len(pairs)
    expected = bradley_terry_loss(chosen[keep] - rejected[keep])
    assert torch.allclose(
        bradley_terry_loss(pairwise_differences(rewards), pairs=partial), expected, atol=1e-6
    )


# ------------------------------------------------------------------ KL


def test_kl_estimators_against_exact_categorical_kl():
    g = torch.Generator().manual_seed(0)
    logp = torch.log_softmax(torch.randn(6, generator=g), -1)  # π
    ref_logp = torch.log_softmax(torch.randn(6, generator=g), -1)  # π_ref
    exact_kl = (logp.exp() * (logp - ref_logp)).sum()
    exact_k2 = (logp.exp() * 0.5 * (ref_logp - logp).square()).sum()
    tokens = torch.multinomial(logp.exp(), 200_000, replacement=True, generator=g)  # samples of π
    lp, rlp = logp[tokens].unsqueeze(0), ref_logp[tokens].unsqueeze(0)  # (1, N)

    def close(est: torch.Tensor, target: torch.Tensor) -> bool:
        se = est.std() / math.sqrt(est.numel())
        return abs(est.mean() - target) < 4 * se

    k1, k2, k3 = (kl_estimate(lp, rlp, name) for name in ("k1", "k2", "k3"))
    assert k1.shape == k3.shape == (1, 200_000)
    assert close(k1, exact_kl) and close(k3, exact_kl)  # unbiased
    assert close(k2, exact_k2)  # ½E[(log r)²], a biased estimate of the KL
    assert (k3 >= 0).all() and (k1 < 0).any()
    assert k3.std() < k1.std()  # the point of k3: lower variance here
    with pytest.raises(ValueError, match="k4"):
        kl_estimate(lp, rlp, "k4")


def test_kl_penalized_rewards_by_hand():
    logprobs = torch.tensor([[-1.0, -2.0, -0.5, 9.0], [-0.2, -3.0, 7.0, 7.0]])  # (2, 4), junk on padding
    ref = torch.tensor([[-1.5, -1.0, -0.5, -9.0], [-0.7, -2.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    scores, beta = torch.tensor([2.0, -1.0]), 0.1
    expected = torch.tensor(
        [
            [-0.1 * 0.5, -0.1 * -1.0, -0.1 * 0.0 + 2.0, 0.0],
            [-0.1 * 0.5, -0.1 * -1.0 - 1.0, 0.0, 0.0],
        ]
    )
    assert torch.allclose(kl_penalized_rewards(scores, logprobs, ref, mask, beta), expected, atol=1e-6)
    # another estimator: the same per-token penalty, score added once, padding zero
    out = kl_penalized_rewards(scores, logprobs, ref, mask.float(), beta, estimator="k3")
    k3 = kl_estimate(logprobs, ref, "k3")
    assert torch.allclose(out[0, :2], -beta * k3[0, :2]) and out[0, 3] == 0 and out[1, 2:].eq(0).all()
    assert torch.allclose(out.sum(-1), scores - beta * (k3 * mask).sum(-1))


# ------------------------------------------------------------------ advantages


def gae_reference(rewards, values, lengths, gamma, lam):
    adv, ret = torch.zeros_like(rewards), torch.zeros_like(rewards)
    for b, n in enumerate(lengths):
        v = values[b, :n].tolist() + [0.0]  # bootstrap 0 after the last real token
        deltas = [rewards[b, t].item() + gamma * v[t + 1] - v[t] for t in range(n)]
        for t in range(n):
            adv[b, t] = sum((gamma * lam) ** k * deltas[t + k] for k in range(n - t))
            ret[b, t] = adv[b, t] + v[t]
    return adv, ret


@pytest.mark.parametrize("gamma,lam", [(0.99, 0.95), (1.0, 1.0)])
def test_gae_matches_double_loop_reference(gamma, lam):
    g = torch.Generator().manual_seed(1)
    lengths = [7, 3, 1, 5, 0]
    mask = lengths_mask(lengths, 7)  # (5, 7)
    rewards = torch.randn(5, 7, generator=g)
    values = torch.randn(5, 7, generator=g)
    rewards_junk = torch.where(mask.bool(), rewards, 1e6)  # padding must not matter
    values_junk = torch.where(mask.bool(), values, -1e6)
    adv, ret = gae(rewards_junk, values_junk, mask, gamma=gamma, lam=lam)
    ref_adv, ref_ret = gae_reference(rewards, values, lengths, gamma, lam)
    assert torch.allclose(adv, ref_adv, atol=1e-5) and torch.allclose(ret, ref_ret, atol=1e-5)
    assert adv[mask == 0].eq(0).all() and ret[mask == 0].eq(0).all()
    if gamma == lam == 1.0:  # returns are the reward-to-go
        to_go = (rewards * mask).flip(-1).cumsum(-1).flip(-1) * mask
        assert torch.allclose(ret, to_go, atol=1e-5)


def test_masked_reductions_ignore_masked_entries():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 6, generator=g) * 3 + 2
    mask = lengths_mask([6, 2, 4], 6).bool()
    junk = torch.where(mask, x, torch.tensor(1e30))
    real = x[mask]
    assert torch.allclose(masked_sum(junk, mask), real.sum())
    assert torch.allclose(masked_mean(junk, mask.float()), real.mean())
    assert torch.allclose(
        masked_mean(junk, mask, dim=-1), torch.stack([x[b][mask[b]].mean() for b in range(3)])
    )
    assert torch.allclose(masked_var(junk, mask), real.var())
    assert torch.allclose(masked_var(junk, mask, unbiased=False), real.var(unbiased=False))

    white = masked_whiten(junk, mask)
    assert white[mask].mean().abs() < 1e-5 and white[mask].var().sub(1).abs() < 1e-4
    assert white[~mask].eq(0).all()
    kept = masked_whiten(junk, mask, shift_mean=False)  # unit variance, original mean kept
    assert torch.allclose(kept[mask].mean(), real.mean(), atol=1e-5)
    assert kept[mask].var().sub(1).abs() < 1e-4
    assert torch.allclose(kept[mask] - real.mean(), white[mask], atol=1e-5)


def test_rloo_advantages_leave_one_out():
    g = torch.Generator().manual_seed(3)
    scores = torch.randn(12, generator=g)
    for k in (2, 3, 4):
        adv = rloo_advantages(scores, k)
        expected = torch.tensor(
            [
                scores[i].item()
                - sum(scores[j].item() for j in range(i // k * k, i // k * k + k) if j != i) / (k - 1)
                for i in range(12)
            ]
        )
        assert torch.allclose(adv, expected, atol=1e-6)
        assert torch.allclose(adv.view(-1, k).sum(-1), torch.zeros(12 // k), atol=1e-5)
    with pytest.raises(ValueError):
        rloo_advantages(scores, 1)
    with pytest.raises(ValueError):
        rloo_advantages(scores, 5)


def test_grpo_advantages_are_standardised_per_group():
    g = torch.Generator().manual_seed(4)
    scores = torch.randn(12, generator=g) * 5 + 3
    adv = grpo_advantages(scores, 4, eps=0.0).view(3, 4)
    assert torch.allclose(adv.mean(-1), torch.zeros(3), atol=1e-5)
    assert torch.allclose(adv.std(-1), torch.ones(3), atol=1e-5)
    group = scores[4:8]
    assert torch.allclose(adv[1], (group - group.mean()) / group.std(), atol=1e-5)
    assert grpo_advantages(torch.ones(4), 4).eq(0).all()  # equal rewards: no signal, no nan
    with pytest.raises(ValueError):
        grpo_advantages(scores, 1)
    with pytest.raises(ValueError):
        grpo_advantages(scores, 5)


# ------------------------------------------------------------------ policy / value losses


def test_ppo_policy_loss_by_hand():
    ratio = torch.tensor([[1.5, 0.5, 1.5, 0.5, 1.1, 3.0]])  # last token is padding
    adv = torch.tensor([[1.0, -1.0, -1.0, 1.0, 2.0, 5.0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]])
    old = torch.full((1, 6), -2.0)
    logprobs = (old + ratio.log()).requires_grad_()
    loss, stats = ppo_policy_loss(logprobs, old, adv, mask, clip=0.2)
    # objectives: clip(1.5)·1 = 1.2 (clipped), clip(0.5)·−1 = −0.8 (clipped), 1.5·−1, 0.5·1, 1.1·2
    assert loss.item() == pytest.approx(-(1.2 - 0.8 - 1.5 + 0.5 + 2.2) / 5, rel=1e-5)
    assert stats["clip_fraction"].item() == pytest.approx(2 / 5)
    assert stats["ratio_mean"].item() == pytest.approx((1.5 + 0.5 + 1.5 + 0.5 + 1.1) / 5, rel=1e-5)
    kl = sum(0.5 * math.log(r) ** 2 for r in (1.5, 0.5, 1.5, 0.5, 1.1)) / 5
    assert stats["approx_kl"].item() == pytest.approx(kl, rel=1e-5)
    assert all(not s.requires_grad and s.dim() == 0 for s in stats.values())
    loss.backward()
    # clipped tokens and padding get no gradient; others get −ρA/N
    expected = torch.tensor([[0.0, 0.0, 1.5, -0.5, -2.2, 0.0]]) / 5
    assert torch.allclose(logprobs.grad, expected, atol=1e-6)


def test_ppo_policy_loss_at_ratio_one_and_padding_invariance():
    g = torch.Generator().manual_seed(5)
    mask = lengths_mask([4, 2, 3], 4)
    logprobs = torch.randn(3, 4, generator=g)
    adv = torch.randn(3, 4, generator=g)
    loss, stats = ppo_policy_loss(logprobs, logprobs.clone(), adv, mask)
    assert loss.item() == pytest.approx(-(adv * mask).sum().item() / mask.sum().item(), rel=1e-5)
    assert stats["clip_fraction"] == 0 and stats["ratio_mean"].item() == pytest.approx(1.0)
    seq_adv = torch.randn(3, generator=g)  # per-sequence advantages broadcast to tokens
    loss_seq, _ = ppo_policy_loss(logprobs, logprobs.clone(), seq_adv, mask)
    assert loss_seq.item() == pytest.approx(
        -(seq_adv[:, None] * mask).sum().item() / mask.sum().item(), rel=1e-5
    )

    old = logprobs + 0.3 * torch.randn(3, 4, generator=g)
    pad = mask == 0
    a = logprobs.clone().requires_grad_()
    b = torch.where(pad, torch.tensor(50.0), logprobs).requires_grad_()  # huge ratio on padding
    loss_a, stats_a = ppo_policy_loss(a, old, adv, mask)
    loss_b, stats_b = ppo_policy_loss(b, torch.where(pad, -50.0, old), torch.where(pad, 1e3, adv), mask)
    loss_a.backward()
    loss_b.backward()
    assert torch.allclose(loss_a, loss_b) and torch.allclose(a.grad, b.grad)
    assert b.grad[pad].eq(0).all() and all(torch.allclose(stats_a[k], stats_b[k]) for k in stats_a)


def test_value_loss_by_hand():
    values = torch.tensor([[1.0, 1.0, 0.1, 9.0]], requires_grad=True)  # last token is padding
    old = torch.tensor([[0.5, 0.5, 0.0, 0.0]])
    returns = torch.tensor([[2.0, 0.0, 1.0, -9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    loss, stats = value_loss(values, old, returns, mask, clip=0.2)
    # token 0: clipped V = 0.7, (0.7 − 2)² = 1.69 > 1 → clipped; token 1: 1 > 0.49; token 2 inside the clip
    assert loss.item() == pytest.approx(0.5 * (1.69 + 1.0 + 0.81) / 3, rel=1e-5)
    assert stats["value_clip_fraction"].item() == pytest.approx(1 / 3)
    loss.backward()
    expected = torch.tensor([[0.0, 1.0, -0.9, 0.0]]) / 3  # clipped term has no gradient
    assert torch.allclose(values.grad, expected, atol=1e-6)
    unclipped, stats = value_loss(values, old, returns, mask, clip=None)
    assert unclipped.item() == pytest.approx(0.5 * (1.0 + 1.0 + 0.81) / 3, rel=1e-5)
    assert stats["value_clip_fraction"] == 0


def test_reinforce_gradient_is_advantage_times_score_function():
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(2, 3, 4, generator=g, requires_grad=True)  # (B, T, V)
    tokens = torch.randint(0, 4, (2, 3), generator=g)
    mask = lengths_mask([3, 2], 3)
    logprobs = torch.log_softmax(logits, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # (B, T)
    adv = torch.tensor([1.5, -2.0])
    loss, _ = reinforce_loss(logprobs, adv, mask)
    (grad,) = torch.autograd.grad(loss, logits)
    # ∇ log π(y) w.r.t. logits = onehot(y) − softmax; summed per sequence over real tokens, times −A/B
    score = torch.nn.functional.one_hot(tokens, 4) - torch.softmax(logits, -1).detach()  # (B, T, V)
    expected = -(adv[:, None, None] * mask[..., None] * score) / 2
    assert torch.allclose(grad, expected, atol=1e-6)
    assert loss.item() == pytest.approx(-(adv * (logprobs * mask).sum(-1)).mean().item(), rel=1e-5)
    token_adv = adv[:, None] * torch.tensor([1.0, 0.5, 2.0])  # per-token advantages
    loss_tok, _ = reinforce_loss(logprobs, token_adv, mask)
    assert loss_tok.item() == pytest.approx(-(token_adv * logprobs * mask).sum().item() / 2, rel=1e-5)


def test_grpo_loss_length_normalised_with_k3_penalty():
    g = torch.Generator().manual_seed(7)
    mask = lengths_mask([4, 1, 3], 4)
    logprobs = torch.randn(3, 4, generator=g).requires_grad_()
    ref = logprobs.detach() + 0.5 * torch.randn(3, 4, generator=g)
    adv = torch.tensor([1.0, -2.0, 0.5])
    loss0, stats0 = grpo_loss(logprobs, logprobs.detach(), ref, adv, mask, beta=0.0)
    assert loss0.item() == pytest.approx(-adv.mean().item(), rel=1e-5)
    (grad,) = torch.autograd.grad(loss0, logprobs)
    assert torch.allclose(grad, -adv[:, None] * mask / (3 * mask.sum(-1, keepdim=True)), atol=1e-6)

    loss, stats = grpo_loss(logprobs, logprobs.detach(), ref, adv, mask, beta=0.1)
    k3 = torch.exp(ref - logprobs.detach()) - (ref - logprobs.detach()) - 1
    mean_k3 = ((k3 * mask).sum(-1) / mask.sum(-1)).mean()  # per-sequence mean, then over sequences
    assert stats["kl"].item() == pytest.approx(mean_k3.item(), rel=1e-5)
    assert loss.item() == pytest.approx(loss0.item() + 0.1 * mean_k3.item(), rel=1e-5)
    assert stats["clip_fraction"] == 0

    pad = mask == 0
    junk = torch.where(pad, torch.tensor(30.0), logprobs.detach())
    loss_junk, stats_junk = grpo_loss(
        junk, torch.where(pad, -30.0, junk), torch.where(pad, 0.0, ref), adv, mask
    )
    loss_ref, stats_ref = grpo_loss(logprobs.detach(), logprobs.detach(), ref, adv, mask)
    assert torch.allclose(loss_junk, loss_ref) and torch.allclose(stats_junk["kl"], stats_ref["kl"])


def test_grpo_loss_clips_like_ppo():
    old = torch.zeros(1, 2)
    logprobs = torch.tensor([[math.log(1.5), math.log(0.5)]])
    loss, stats = grpo_loss(logprobs, old, logprobs, torch.tensor([1.0]), torch.ones(1, 2), beta=0.0)
    assert loss.item() == pytest.approx(-(1.2 + 0.5) / 2, rel=1e-5)
    assert stats["clip_fraction"].item() == pytest.approx(0.5)


# ------------------------------------------------------------------ diagnostics


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    return entropy_from_logprobs(torch.log_softmax(logits, dim=-1))


def test_entropy_from_logprobs():
    g = torch.Generator().manual_seed(8)
    logits = torch.randn(2, 3, 5, generator=g)
    p = torch.softmax(logits, -1)
    assert torch.allclose(entropy_from_logits(logits), -(p * p.log()).sum(-1), atol=1e-6)
    assert torch.allclose(entropy_from_logits(torch.zeros(4, 7)), torch.full((4,), math.log(7)))
    assert torch.allclose(entropy_from_logits(logits + 1e4), entropy_from_logits(logits), atol=1e-3)
    with_inf = torch.cat([logits, torch.full((2, 3, 1), -math.inf)], -1).requires_grad_()
    h = entropy_from_logits(with_inf)
    assert torch.allclose(h, entropy_from_logits(logits), atol=1e-6)
    h.sum().backward()
    assert torch.isfinite(with_inf.grad).all()


def test_explained_variance():
    g = torch.Generator().manual_seed(9)
    returns = torch.randn(4, 6, generator=g)
    mask = lengths_mask([6, 3, 5, 2], 6)
    junk_values = torch.where(mask.bool(), returns, 1e6)
    assert explained_variance(junk_values, returns, mask).item() == pytest.approx(1.0)
    constant = torch.full_like(returns, masked_mean(returns, mask).item())
    assert explained_variance(constant, returns, mask).item() == pytest.approx(0.0, abs=1e-5)
    noisy = returns + 0.5 * torch.randn(4, 6, generator=g)
    assert 0 < explained_variance(noisy, returns, mask).item() < 1


# ------------------------------------------------------------------ KL control


def test_adaptive_kl_controller():
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    ctl.update(kl=6.6, n_steps=100)  # 10% above target
    assert ctl.value == pytest.approx(0.1 * (1 + 0.1 * 100 / 10_000))
    before = ctl.value
    ctl.update(kl=60.0, n_steps=256)  # far above: change clipped at +20%·n/horizon
    assert ctl.value == pytest.approx(before * (1 + 0.2 * 256 / 10_000))
    before = ctl.value
    ctl.update(kl=0.0, n_steps=256)  # far below: clipped at −20%·n/horizon
    assert ctl.value == pytest.approx(before * (1 - 0.2 * 256 / 10_000))
    before = ctl.value
    ctl.update(kl=6.0, n_steps=256)  # on target: unchanged
    assert ctl.value == pytest.approx(before)

    restored = AdaptiveKLController(1.0, target=6.0, horizon=10_000)
    restored.load_state_dict(ctl.state_dict())
    assert restored.value == ctl.value
    ctl.update(3.0, 64)
    restored.update(3.0, 64)
    assert restored.value == ctl.value < before

    fixed = FixedKLController(0.05)
    for kl in (0.0, 100.0):
        fixed.update(kl, 1000)
    assert fixed.value == 0.05
    other = FixedKLController(1.0)
    other.load_state_dict(fixed.state_dict())
    assert other.value == 0.05


# ------------------------------------------------------------------ best-of-n


def test_best_of_n_kl_values():
    ns = [1, 4, 8, 16, 64, 256]
    expected = [0.0, 0.64, 1.20, 1.84, 3.17, 4.55]  # log 64 − 63/64 = 3.1745
    assert [round(best_of_n_kl(n), 2) for n in ns] == expected
    as_tensor = best_of_n_kl(torch.tensor(ns))
    assert torch.allclose(as_tensor, torch.tensor([best_of_n_kl(n) for n in ns]))


def exact_best_of_n(probs: torch.Tensor, n: int) -> torch.Tensor:
    """Best-of-n distribution when category c has score c (all distinct): P(max = c) = F(c)ⁿ − F(c−1)ⁿ."""
    cdf = probs.double().cumsum(0)
    return cdf.pow(n) - torch.cat([cdf.new_zeros(1), cdf[:-1]]).pow(n)


def kl(p: torch.Tensor, q: torch.Tensor) -> float:
    keep = p > 0
    return (p[keep] * (p[keep] / q[keep]).log()).sum().item()


@pytest.mark.parametrize("n", [4, 16])
def test_best_of_n_kl_against_the_best_of_n_distribution(n):
    g = torch.Generator().manual_seed(10)
    # many equiprobable categories with distinct scores: nearly continuous, the formula is nearly exact
    uniform = torch.full((2000,), 1 / 2000)
    bon = exact_best_of_n(uniform, n)
    assert kl(bon, uniform.double()) == pytest.approx(best_of_n_kl(n), abs=1e-3)
    # a non-uniform π: the formula is still an upper bound and close, ties being negligible
    probs = torch.softmax(0.5 * torch.randn(2000, generator=g), -1)
    bon = exact_best_of_n(probs, n)
    exact = kl(bon, probs.double())
    # π is float32: its 2000 probabilities sum to 1 + δ, not 1 (|δ| from 1e-8 to 2e-7 on the machines
    # seen: the softmax's float32 rounding, which depends on the CPU's kernels). From an unnormalized π
    # the exact KL comes out as (1 + δ)ⁿ·(KL + (n − 1)·δ), off by (n·KL + n − 1)·δ to first order, which
    # the slack (n·KL + n)·|δ| covers (≤ 1e-5 here, where the bound's true margin is 4e-7 at n = 4 and
    # 6e-6 at n = 16); float64's own rounding (2000 terms, each ~2⁻⁵³ relative) adds < 1e-9.
    delta = probs.double().sum().item() - 1
    slack = n * (best_of_n_kl(n) + 1) * abs(delta) + 1e-9
    assert exact <= best_of_n_kl(n) + slack and exact == pytest.approx(best_of_n_kl(n), abs=0.02)
    # Monte Carlo: sample n tokens from π, keep the best; E[log π_bon(y)/π(y)] matches the exact KL
    draws = torch.multinomial(probs.expand(20_000, -1), n, replacement=True, generator=g)  # (S, n)
    best = draws.max(-1).values  # the scorer ranks categories by index
    log_ratio = (bon[best] / probs.double()[best]).log()
    se = log_ratio.std().item() / math.sqrt(best.numel())
    assert abs(log_ratio.mean().item() - exact) < 4 * se
    # few categories: ties among the n samples are frequent and the bound is strict
    few = torch.full((4,), 0.25)
    assert kl(exact_best_of_n(few, n), few.double()) < best_of_n_kl(n) - 0.04


def test_a_masked_kl_estimate_is_exactly_zero_on_masked_tokens_and_unchanged_elsewhere():
    logprobs = torch.tensor([[-1.0, -2.0, -500.0]])  # a padded position's arbitrary log-prob
    ref = torch.tensor([[-1.5, -1.0, 0.0]])
    mask = torch.tensor([[1, 1, 0]])
    for estimator in ("k1", "k2", "k3"):
        masked = kl_estimate(logprobs, ref, estimator, mask)
        assert torch.isfinite(masked).all() and masked[0, 2] == 0  # k3's exp(500) never computed
        assert torch.equal(masked[:, :2], kl_estimate(logprobs, ref, estimator)[:, :2])
