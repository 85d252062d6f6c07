"""The distribution in the ratio and the KL: the log-probs stored while sampling equal a fresh pass under
every sampling setting (temperature, top-k, top-p), truncated (the distribution that sampled) or not;
the RL stage's first update sees ratios of exactly 1 and a KL of 0 either way; the raw ratios are
metrics; algo.dropout acts in the update only."""

from __future__ import annotations

import pytest
import torch

from rlhf_lab.models import load_causal_lm, load_tokenizer
from rlhf_lab.rollout import generate, response_logprobs
from rlhf_lab.rollout.sampling import truncate
from rlhf_lab.stages.rl.algorithms import ALGORITHMS
from rlhf_lab.stages.rl.module import RLModule
from rlhf_lab.tensors import left_pad
from tests.helpers import tiny_llama

PROMPTS = [[1, 5, 6], [1, 7], [1, 9, 9, 4], [1, 3]] * 2
SETTINGS = {
    "T=0.7": dict(temperature=0.7),
    "top_k=5": dict(top_k=5),
    "top_p=0.7": dict(top_p=0.7),
    "T=0.7,top_k=8,top_p=0.9": dict(temperature=0.7, top_k=8, top_p=0.9),
}


def sample(model, truncated: bool, **sampling):
    ids, mask = left_pad(PROMPTS, pad_token_id=0)
    g = torch.Generator().manual_seed(0)
    return generate(
        model, ids, mask, max_new_tokens=10, eos_token_id=2, pad_token_id=0, generator=g,
        truncated_logprobs=truncated, **sampling,
    )  # fmt: skip


@pytest.mark.parametrize("name", SETTINGS)
def test_stored_sampling_logprobs_equal_a_fresh_pass(name):
    settings = SETTINGS[name]
    temperature, top_k, top_p = (
        settings.get("temperature", 1.0),
        settings.get("top_k", 0),
        settings.get("top_p", 1.0),
    )
    model = tiny_llama()
    full, truncated = sample(model, False, **settings), sample(model, True, **settings)
    assert torch.equal(full.response_ids, truncated.response_ids), (
        "the setting changes what is stored, not drawn"
    )
    mask = full.response_mask.bool()  # (B, T)
    fresh_full = response_logprobs(model, full, temperature)  # (B, T)
    fresh_truncated = response_logprobs(model, truncated, temperature, top_k=top_k, top_p=top_p)  # (B, T)
    torch.testing.assert_close(fresh_full, full.logprobs, atol=1e-5, rtol=0)
    torch.testing.assert_close(fresh_truncated, truncated.logprobs, atol=1e-5, rtol=0)

    # the two differ by the mass the truncation keeps: log π_trunc(y) = log π(y) − log Σ_{kept} π
    logits = response_logprobs(model, full, temperature, return_logits=True).logits  # (B, T, V)
    kept = truncate(logits, top_k, top_p).isfinite()  # (B, T, V)
    mass = (logits.softmax(-1) * kept).sum(-1)  # (B, T)
    gap = truncated.logprobs - full.logprobs  # (B, T)
    torch.testing.assert_close(gap[mask], -mass.log()[mask], atol=1e-5, rtol=0)
    if top_k or top_p < 1:
        assert gap[mask].min() > -1e-6 and gap[mask].max() > 0.05
        # why the choice matters: the untruncated fresh pass over the sampler's stored log-probs is a
        # "ratio" equal to the kept mass, below 1 before any update (the bias of mixing them)
        mixed = (fresh_full - truncated.logprobs).exp()[mask]
        torch.testing.assert_close(mixed, mass[mask], atol=1e-5, rtol=1e-4)
        assert mixed.mean() < 0.95
    else:
        assert gap[mask].abs().max() < 1e-6


def test_truncated_logprobs_stay_finite_when_the_policy_moves():
    """After an update a sampled token may leave the policy's top-k: it is kept (renormalized with the set),
    so its log-prob, the ratio and the gradient stay finite."""
    rollout = sample(tiny_llama(), True, top_k=3)
    moved = tiny_llama(seed=1)  # another policy: many sampled tokens are outside its top 3
    mask = rollout.response_mask.bool()
    logits = response_logprobs(moved, rollout, return_logits=True).logits  # (B, T, V)
    top3 = logits.topk(3, dim=-1).indices  # (B, T, 3)
    outside = ~(top3 == rollout.response_ids.unsqueeze(-1)).any(-1) & mask  # (B, T)
    assert outside.any(), "the test needs sampled tokens outside the moved policy's top 3"
    moved.train()
    logp = response_logprobs(moved, rollout, top_k=3)  # (B, T)
    assert torch.isfinite(logp).all()
    full = response_logprobs(moved, rollout).detach()  # (B, T)
    assert (logp.detach() >= full - 1e-6)[mask].all()  # renormalized over at most 4 tokens
    (-(logp * mask).sum()).backward()
    assert all(torch.isfinite(p.grad).all() for p in moved.parameters() if p.grad is not None)


@pytest.fixture(scope="module")
def world_init(world):
    """The debug world's untrained model folder and its tokenizer."""
    cfg, w = world
    return w.init_model, load_tokenizer(w.init_model, cfg.model)


def first_update(make_cfg, world_init, *overrides: str):
    """An RLModule of a fresh copy of the debug world's untrained policy: one step's experience and the
    loss of its first update (nothing has moved yet: ratios must be 1 and the KL 0)."""
    path, tokenizer = world_init
    cfg = make_cfg("stage=rl", *overrides)
    module = RLModule(load_causal_lm(path, cfg.model, tokenizer), tokenizer, cfg, [], [], None)
    k = cfg.algo.samples_per_prompt
    ids, mask = left_pad([p for p in [[5, 6, 7], [8, 9], [10, 11, 12, 13], [14]] for _ in range(k)], 0)
    rollout = module.generate(ids, mask, torch.Generator().manual_seed(0))
    scores = torch.randn(len(rollout), generator=torch.Generator().manual_seed(1))
    experience, stats = module.experience(rollout, scores)
    return module, experience, stats, module.loss(experience)[1]


RATIO_ALGOS = [name for name, entry in ALGORITHMS.items() if not entry.on_policy]


@pytest.mark.parametrize("truncated", [True, False])
@pytest.mark.parametrize("algo", RATIO_ALGOS)
def test_the_first_update_sees_ratios_of_one_and_no_kl(algo, truncated, make_cfg, world_init):
    sampling = ["rl.sampling.temperature=0.7", "rl.sampling.top_p=0.7", "rl.sampling.top_k=40"]
    module, experience, stats, loss_stats = first_update(
        make_cfg, world_init, f"algo={algo}", f"algo.truncate_logprobs={truncated}", *sampling
    )
    fresh = module.forward(experience.rollout)[0].logprobs.detach()  # (N, T) what the update computes
    mask = experience.rollout.response_mask.bool()
    torch.testing.assert_close(experience.old_logprobs[mask], fresh[mask], atol=1e-5, rtol=0)
    torch.testing.assert_close(experience.ref_logprobs[mask], fresh[mask], atol=1e-5, rtol=0)
    assert abs(stats["kl"]) < 1e-3
    assert experience.max_new_tokens == module.settings.sampling.max_new_tokens  # Dr. GRPO's constant
    assert loss_stats["ratio_mean"].item() == pytest.approx(1.0, abs=1e-5)
    assert loss_stats["ratio_max"].item() == pytest.approx(1.0, abs=1e-4)
    assert loss_stats["clip_fraction"] == 0


def test_truncate_logprobs_chooses_the_distribution(make_cfg, world_init):
    sampling = ["algo=grpo", "rl.sampling.top_p=0.7"]
    _, truncated, _, _ = first_update(make_cfg, world_init, *sampling)
    _, full, _, _ = first_update(make_cfg, world_init, *sampling, "algo.truncate_logprobs=false")
    assert torch.equal(truncated.rollout.response_ids, full.rollout.response_ids)
    mask = full.rollout.response_mask.bool()
    gap = (truncated.old_logprobs - full.old_logprobs)[mask]  # −log(kept mass) ≥ 0
    assert gap.min() > -1e-6 and gap.max() > 0.05
    _, plain, _, _ = first_update(make_cfg, world_init, "algo=grpo")  # no top-k / top-p: no difference
    _, plain_full, _, _ = first_update(make_cfg, world_init, "algo=grpo", "algo.truncate_logprobs=false")
    assert torch.equal(plain.old_logprobs, plain_full.old_logprobs)


def test_dropout_acts_in_the_update_only(make_cfg, world_init):
    module, experience, stats, loss_stats = first_update(make_cfg, world_init, "algo=ppo", "algo.dropout=0.3")
    assert abs(stats["kl"]) < 1e-3, "old and reference log-probs come from passes without dropout"
    mask = experience.rollout.response_mask.bool()
    again = module.before_update(experience.rollout)[0]  # (N, T)
    torch.testing.assert_close(again[mask], experience.old_logprobs[mask])  # deterministic: no dropout
    assert loss_stats["ratio_max"] > 1.01, "the update's pass drops units: its ratios move off 1"
    _, _, _, without = first_update(make_cfg, world_init, "algo=ppo")
    assert without["ratio_max"].item() == pytest.approx(1.0, abs=1e-4)
