"""Off-policy RL: stale rollouts (rl.staleness=k: the rollouts of step t sampled by the weights of step
t − k) and the sampler–learner corrections (algo.off_policy) in the RL stage; their pure maths are in
tests/test_losses_importance.py."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from rlhf_lab.artifacts import read_manifest
from rlhf_lab.config import ConfigError
from rlhf_lab.losses import off_policy_weights
from rlhf_lab.pipeline import check, ensure, stage_key
from rlhf_lab.rollout import generate, response_logprobs
from rlhf_lab.stages.rl.algorithms import problems
from rlhf_lab.stages.rl.module import RLModule
from rlhf_lab.stages.rl.stage import key_config
from rlhf_lab.stages.rl.staleness import StaleWeights, load, snapshot, trainable
from rlhf_lab.tensors import left_pad
from tests.helpers import RL_FAST, policy_weights, tiny_llama


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def fake_update(model, step: int) -> None:
    with torch.no_grad():
        for p in trainable(model).values():
            p.add_(0.01 * (step + 1))


# ------------------------------------------------------------------------------------ the lag itself
@pytest.mark.parametrize("k", [1, 2])
def test_the_sampler_holds_the_weights_of_k_steps_before(k):
    model = tiny_llama()
    stale, starts, lent = StaleWeights(k), [], []
    for step in range(6):
        starts.append(snapshot(model))  # the weights of step t, before its update
        with stale.sampler(model):
            lent.append(snapshot(model))
        assert same(snapshot(model), starts[-1]), "the current weights are put back, bitwise"
        fake_update(model, step)
    for step in range(6):
        assert same(lent[step], starts[max(0, step - k)]), step
    assert len(stale.queue) == k  # k copies kept, no more


def test_staleness_0_lends_nothing_and_keeps_nothing():
    model = tiny_llama()
    stale = StaleWeights(0)
    with stale.sampler(model):
        fake_update(model, 0)  # would be seen by the sampler: the weights are the model's own
    assert not stale.queue and stale.state_dict() == []


def test_a_restored_lag_lends_the_same_weights():
    model = tiny_llama()
    stale = StaleWeights(2)
    for step in range(3):
        with stale.sampler(model):
            pass
        fake_update(model, step)
    restored = StaleWeights(2)
    restored.load_state_dict(stale.state_dict())
    with restored.sampler(model):
        lent = snapshot(model)
    assert same(lent, stale.queue[0])


# ------------------------------------------------------------------------------- the module's step
def module_and_rollout(make_cfg, *overrides: str):
    """An RLModule (GRPO, k = 4 per group) on a tiny Llama and 8 sampled rollouts, with scores."""
    module = RLModule(tiny_llama(), None, make_cfg("stage=rl", "algo=grpo", *overrides), [], [], None)
    ids, mask = left_pad([[1, 5, 6]] * 4 + [[1, 7]] * 4, pad_token_id=0)
    g = torch.Generator().manual_seed(0)
    rollout = generate(
        module.policy, ids, mask, max_new_tokens=8, eos_token_id=2, pad_token_id=0, generator=g
    )
    return module, rollout, torch.randn(8, generator=g)


def test_at_staleness_0_without_a_correction_no_sampler_is_recorded(make_cfg):
    module, rollout, scores = module_and_rollout(make_cfg)
    assert not module.records_sampler and not module.fresh_old_logprobs  # generation's log-probs, as before
    experience, stats = module.experience(rollout, scores)
    assert experience.sampler_logprobs is None and not any(k.startswith("off_policy") for k in stats)
    assert torch.equal(experience.old_logprobs, rollout.logprobs)


def test_with_the_samplers_own_logprobs_a_correction_changes_nothing(make_cfg):
    module, rollout, scores = module_and_rollout(make_cfg)
    before, _ = module.experience(rollout, scores)
    for correction, level in (("tis", "token"), ("tis", "sequence"), ("mis", "token"), ("mis", "sequence")):
        module.algo.off_policy = dataclasses.replace(
            module.algo.off_policy, correction=correction, level=level
        )
        assert module.records_sampler
        after, stats = module.experience(rollout, scores, rollout.logprobs)  # sampler = learner
        per_token = after.advantages.dim() == 2
        expected = (
            before.advantages.unsqueeze(-1).expand_as(after.advantages) if per_token else before.advantages
        )
        assert torch.equal(after.advantages, expected), (correction, level)
        assert stats["off_policy/kl"] == 0 and stats["off_policy/weight_mean"] == 1


def test_a_stale_sampler_weighs_the_advantages(make_cfg):
    module, rollout, scores = module_and_rollout(make_cfg, "algo.off_policy.correction=tis")
    before, _ = module.experience(rollout, scores)  # no sampler given: no weights
    g = torch.Generator().manual_seed(1)
    sampler = rollout.logprobs + 0.5 * torch.randn(rollout.logprobs.shape, generator=g)  # (N, T)
    after, stats = module.experience(rollout, scores, sampler)
    weights, _ = off_policy_weights(before.old_logprobs, sampler, rollout.response_mask, "tis", "token", 2.0)
    torch.testing.assert_close(after.advantages, before.advantages.unsqueeze(-1) * weights)  # (N, T)
    assert 0 < stats["off_policy/clipped_share"] < 1 and stats["off_policy/weight_max"] == 2.0
    mask = rollout.response_mask.bool()
    assert stats["off_policy/kl"] == pytest.approx(
        torch.where(mask, sampler - before.old_logprobs, 0).sum(-1).mean().item(), rel=1e-6
    )


def test_stale_rollouts_take_the_learners_log_probs_from_a_fresh_pass(make_cfg):
    module, rollout, scores = module_and_rollout(make_cfg, "rl.staleness=1")
    assert module.fresh_old_logprobs and module.records_sampler
    fake_update(module.policy, 0)  # the learner has moved on from the sampler
    experience, stats = module.experience(rollout, scores, rollout.logprobs)
    learner = response_logprobs(module.policy, rollout, module.temperature)
    torch.testing.assert_close(experience.old_logprobs, learner)
    assert not torch.allclose(experience.old_logprobs, rollout.logprobs, atol=1e-3)
    assert torch.equal(experience.sampler_logprobs, rollout.logprobs) and stats["off_policy/kl"] != 0


# ------------------------------------------------------------------------------------- settings
@pytest.mark.parametrize("algo", ["gspo", "gmpo"])
def test_a_sequence_ratio_takes_only_sequence_corrections(algo, make_cfg):
    cfg = make_cfg("stage=rl", f"algo={algo}", "algo.off_policy.correction=tis")
    message = f"algo.off_policy.level: algo={algo} has one importance ratio per sequence"
    assert any(p.startswith(message) for p in problems(cfg.algo, cfg.rl.rollouts_per_step))
    with pytest.raises(ConfigError, match=r"algo\.off_policy\.level"):
        check(cfg, "rl")
    fine = make_cfg(
        "stage=rl", f"algo={algo}", "algo.off_policy.correction=mis", "algo.off_policy.level=sequence"
    )
    assert list(problems(fine.algo, fine.rl.rollouts_per_step)) == []


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("algo.off_policy.cap=0.5", "algo.off_policy.cap: must be >= 1, got 0.5"),
        ("algo.off_policy.threshold=1", "algo.off_policy.threshold: must be > 1, got 1.0"),
        (
            "algo.off_policy.correction=clip",
            "algo.off_policy.correction: 'clip' is not one of none, tis, mis",
        ),
        ("algo.off_policy.level=batch", "algo.off_policy.level: 'batch' is not one of token, sequence"),
        ("rl.staleness=-1", "rl.staleness: must be >= 0, got -1"),
        ("algo.tau_neg=0", "algo.tau_neg: must be > 0, got 0.0"),
    ],
)
def test_bad_off_policy_settings_name_the_key(override, message, make_cfg):
    with pytest.raises(ConfigError) as error:
        make_cfg("stage=rl", override)
    assert message in str(error.value)


def test_rl_artifacts_built_before_keep_their_key(make_cfg):
    """At their defaults the new settings compute what runs before them did, so they stay out of the key;
    away from them they change it."""
    base = make_cfg("stage=rl")
    key = key_config(base)
    assert "staleness" not in key["rl"] and not {"off_policy", "tau_pos", "tau_neg"} & set(key["algo"])
    untouched = make_cfg("stage=rl", "algo.off_policy.cap=3")  # no correction: the cap computes nothing
    assert stage_key(untouched, "rl") == stage_key(base, "rl")
    for override in ("rl.staleness=1", "algo.off_policy.correction=tis", "algo.tau_pos=2"):
        assert stage_key(make_cfg("stage=rl", override), "rl") != stage_key(base, "rl"), override


# ------------------------------------------------------------------------------------- whole runs
@pytest.mark.slow
def test_stale_rollouts_are_sampled_by_the_weights_of_the_step_before(make_cfg, tmp_path, monkeypatch):
    """rl.staleness=1: the weights that generate step t's rollouts are those at the start of step t − 1
    (step 0's for step 0), bitwise, and the recorded sampler log-probs are theirs, not the learner's."""
    cfg = make_cfg(*RL_FAST, "algo=grpo", "rl.staleness=1", "rl.max_steps=3", "rl.eval_every=3")
    starts, lent, records = [], [], []
    original_step, original_rollout, original_experience = (
        RLModule.training_step,
        RLModule.rollout,
        RLModule.experience,
    )

    def training_step(self, step, batch_idx):
        starts.append(snapshot(self.policy))
        return original_step(self, step, batch_idx)

    def rollout(self, prompt_ids):
        lent.append(snapshot(self.policy))
        return original_rollout(self, prompt_ids)

    def experience(self, rollout, scores, sampler_logprobs=None):
        records.append((self, rollout, sampler_logprobs))
        return original_experience(self, rollout, scores, sampler_logprobs)

    for name, spy in (("training_step", training_step), ("rollout", rollout), ("experience", experience)):
        monkeypatch.setattr(RLModule, name, spy)
    out = ensure(cfg, "rl", tmp_path)
    assert len(starts) == len(lent) == len(records) == 3
    for step in range(3):
        assert same(lent[step], starts[max(0, step - 1)]), f"step {step} sampled with other weights"
    assert not same(lent[2], starts[2])

    module = records[0][0]

    @torch.no_grad()
    def logprobs_under(weights, rollout):
        load(module.policy, weights)
        return response_logprobs(module.policy, rollout, module.temperature)

    for step in (1, 2):
        _, rollout, sampler = records[step]
        torch.testing.assert_close(sampler, logprobs_under(starts[step - 1], rollout), atol=1e-5, rtol=0)
        gap = (sampler - logprobs_under(starts[step], rollout))[rollout.response_mask.bool()]
        assert gap.abs().max() > 1e-3, "the learner's log-probs, not the sampler's"
    metrics = read_manifest(out)["metrics"]
    assert metrics["rl/train/off_policy/kl"] != 0


@pytest.mark.slow
def test_a_correction_at_staleness_0_with_the_samplers_own_logprobs_changes_nothing(make_cfg, tmp_path):
    """GRPO's old log-probs are generation's own, so TIS weighs every token by exactly 1."""
    plain = ensure(make_cfg(*RL_FAST, "algo=grpo"), "rl", tmp_path / "a")
    tis = ensure(make_cfg(*RL_FAST, "algo=grpo", "algo.off_policy.correction=tis"), "rl", tmp_path / "b")
    assert plain != tis  # two artifacts, two runs
    assert same(policy_weights(plain), policy_weights(tis))
    metrics = read_manifest(tis)["metrics"]
    assert metrics["rl/train/off_policy/weight_mean"] == 1
    assert metrics["rl/train/off_policy/clipped_share"] == 0
