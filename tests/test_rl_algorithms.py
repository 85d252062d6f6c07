"""The algorithm table: each entry's requirements are checked before anything is built, and each
entry's advantages are the ones its paper defines."""

from __future__ import annotations

import pytest
import torch

from rlhf_lab.config import AlgoConfig, ConfigError
from rlhf_lab.pipeline import check
from rlhf_lab.stages.rl.algorithms import ALGORITHMS, MovingAverage, problems


def test_every_algo_file_names_an_entry_of_the_table(make_cfg):
    from rlhf_lab.api import CONF_DIR

    names = {make_cfg(f"algo={path.stem}").algo.name for path in (CONF_DIR / "algo").glob("*.yaml")}
    assert names == set(ALGORITHMS)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["algo=rloo", "algo.samples_per_prompt=1"],
            "algo.samples_per_prompt: algo=rloo compares the samples",
        ),
        (
            ["algo=grpo", "algo.samples_per_prompt=1"],
            "algo.samples_per_prompt: algo=grpo compares the samples",
        ),
        (["algo=ppo", "algo.value.model=none"], "algo.value.model: algo=ppo needs a value function"),
        (["algo=reinforce", "algo.epochs=2"], "algo.epochs: algo=reinforce is an on-policy estimator"),
        (["algo=rloo", "algo.minibatches=2"], "algo.epochs: algo=rloo is an on-policy estimator"),
        (["algo=rloo", "rl.rollouts_per_step=10"], "rl.rollouts_per_step: must be a multiple"),
        (
            ["algo=dapo", "algo.samples_per_prompt=1"],
            "algo.samples_per_prompt: algo=dapo compares the samples",
        ),
        (
            ["algo=gspo", "algo.samples_per_prompt=1"],
            "algo.samples_per_prompt: algo=gspo compares the samples",
        ),
        (["algo=rloo", "algo.clip_high=0.3"], "algo.clip_high: algo=rloo has no importance ratio"),
        (
            ["algo=cispo", "algo.samples_per_prompt=1"],
            "algo.samples_per_prompt: algo=cispo compares the samples",
        ),
        (
            ["algo=gmpo", "algo.off_policy.correction=tis"],
            "algo.off_policy.level: algo=gmpo has one importance ratio per sequence",
        ),
        (["algo.name=dpo"], "algo.name: 'dpo' is not one of ppo, reinforce, rloo, grpo"),
    ],
)
def test_a_stage_refuses_settings_its_algorithm_cannot_run_with(overrides, message, make_cfg):
    cfg = make_cfg("stage=rl", *overrides)
    assert any(p.startswith(message) for p in problems(cfg.algo, cfg.rl.rollouts_per_step))
    with pytest.raises(ConfigError, match=message.split(":")[0]):
        check(cfg, "rl")  # what every entry point asks before building anything


def test_algorithm_settings_are_not_checked_where_no_stage_uses_them(make_cfg):
    check(make_cfg("stage=sft", "algo=rloo", "algo.samples_per_prompt=1"), "sft")  # does not raise


def test_the_default_settings_of_every_algorithm_pass():
    for name in ALGORITHMS:
        value = "none" if name != "ppo" else "head"
        algo = AlgoConfig(name=name, samples_per_prompt=4 if ALGORITHMS[name].group else 1)
        algo.value.model = value
        assert list(problems(algo, 64)) == []


def _rewards(returns: list[float], width: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rewards (N, width) whose row sums are `returns`, spread over ragged masks."""
    n = len(returns)
    mask = torch.ones(n, width)
    mask[0, -1] = 0  # a shorter response
    rewards = torch.zeros(n, width)
    rewards[:, 0] = torch.tensor(returns) - 0.5
    rewards[:, 1] = 0.5
    return rewards, mask


def test_sequence_advantages_of_each_entry_by_hand():
    rewards, mask = _rewards([1.0, 2.0, 4.0, 7.0])
    algo = AlgoConfig(name="rloo", samples_per_prompt=2)
    advantages, returns = ALGORITHMS["rloo"].advantages(rewards, None, mask, algo, None)
    assert returns is None
    torch.testing.assert_close(advantages, torch.tensor([-1.0, 1.0, -3.0, 3.0]))  # R_i − R_other

    algo = AlgoConfig(name="grpo", samples_per_prompt=2)
    advantages, _ = ALGORITHMS["grpo"].advantages(rewards, None, mask, algo, None)
    std = torch.tensor([1.0, 2.0]).std()  # the group (1, 2): mean 1.5, unbiased std 0.7071
    expected = torch.tensor([-0.5, 0.5]) / (std + 1e-4)
    torch.testing.assert_close(advantages[:2], expected)

    algo = AlgoConfig(name="reinforce", baseline="moving_average", baseline_decay=0.5)
    baseline = MovingAverage(algo.baseline_decay)
    first, _ = ALGORITHMS["reinforce"].advantages(rewards, None, mask, algo, baseline)
    torch.testing.assert_close(first, torch.tensor([1.0, 2.0, 4.0, 7.0]) - 3.5)  # its own mean first
    second, _ = ALGORITHMS["reinforce"].advantages(rewards, None, mask, algo, baseline)
    torch.testing.assert_close(second, torch.tensor([1.0, 2.0, 4.0, 7.0]) - 3.5)  # 0.5·3.5 + 0.5·3.5
    assert baseline.value == pytest.approx(3.5)


def test_ppo_advantages_are_gae_with_its_value_targets():
    rewards, mask = _rewards([1.0, 2.0])
    values = torch.tensor([[0.1, 0.2, 0.0], [0.3, 0.1, 0.4]])
    algo = AlgoConfig(name="ppo")
    advantages, returns = ALGORITHMS["ppo"].advantages(rewards, values, mask, algo, None)
    # γ = 1, λ = 0.95; row 1 has rewards (1.5, 0.5, 0):
    # δ2 = 0 − 0.4, δ1 = 0.5 + 0.4 − 0.1, δ0 = 1.5 + 0.1 − 0.3
    d2, d1, d0 = -0.4, 0.8, 1.3
    a2 = d2
    a1 = d1 + 0.95 * a2
    a0 = d0 + 0.95 * a1
    torch.testing.assert_close(advantages[1], torch.tensor([a0, a1, a2]))
    torch.testing.assert_close(returns, (advantages + values) * mask)


def test_the_newer_entries_advantages_by_hand():
    rewards, mask = _rewards([1.0, 2.0, 4.0, 7.0])
    algo = AlgoConfig(name="dr_grpo", samples_per_prompt=2)
    advantages, returns = ALGORITHMS["dr_grpo"].advantages(rewards, None, mask, algo, None)
    assert returns is None
    torch.testing.assert_close(advantages, torch.tensor([-0.5, 0.5, -1.5, 1.5]))  # r − mean, no std
    algo = AlgoConfig(name="dapo", samples_per_prompt=2)
    dapo, _ = ALGORITHMS["dapo"].advantages(rewards, None, mask, algo, None)
    grpo, _ = ALGORITHMS["grpo"].advantages(rewards, None, mask, algo, None)
    torch.testing.assert_close(dapo, grpo)
    for name in ("gspo", "cispo", "gmpo", "sapo"):  # GRPO's group-normalized advantages
        advantages, _ = ALGORITHMS[name].advantages(rewards, None, mask, algo, None)
        torch.testing.assert_close(advantages, grpo)

    # REINFORCE++: per token, the return to go (rewards (r − 0.5, 0.5, 0.5)), whitened over the batch
    advantages, _ = ALGORITHMS["reinforce_pp"].advantages(rewards, None, mask, AlgoConfig(), None)
    assert advantages.shape == rewards.shape and advantages[0, -1] == 0  # row 0 is one token shorter
    to_go = torch.tensor([[1.0, 0.5, 0.0], [2.0, 0.5, 0.0], [4.0, 0.5, 0.0], [7.0, 0.5, 0.0]])
    real = to_go[mask.bool()]
    expected = torch.where(mask.bool(), (to_go - real.mean()) / real.std(), torch.zeros(()))
    torch.testing.assert_close(advantages, expected, atol=1e-5, rtol=0)


def test_dapo_leaves_out_the_groups_whose_rewards_are_all_equal(make_cfg):
    from rlhf_lab.rollout import generate
    from rlhf_lab.stages.rl.experience import Experience
    from rlhf_lab.stages.rl.module import RLModule
    from rlhf_lab.tensors import left_pad
    from tests.helpers import tiny_llama

    module = RLModule(tiny_llama(), None, make_cfg("stage=rl", "algo=dapo"), [], [], None)
    ids, mask = left_pad([[1, 5, 6]] * 4 + [[1, 7]] * 4 + [[1, 9, 4]] * 4, pad_token_id=0)
    g = torch.Generator().manual_seed(0)
    rollout = generate(
        module.policy, ids, mask, max_new_tokens=8, eos_token_id=2, pad_token_id=0, generator=g
    )
    scores = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.0, 0.2, 0.0, 0.0])  # group 2 all equal
    keep = ALGORITHMS["dapo"].keep(scores, 4)
    assert keep.tolist() == [True] * 4 + [False] * 4 + [True] * 4
    experience = Experience(
        rollout, rollout.logprobs + 0.1, rollout.logprobs, torch.randn(12, generator=g), keep=keep
    )
    assert experience.mask[4:8].eq(0).all() and experience.mask[keep].equal(rollout.response_mask[keep])
    loss, stats = module.loss(experience)
    kept = keep.nonzero().squeeze(1)
    loss_kept, stats_kept = module.loss(experience.select(kept))  # the same: a token mean over kept rows
    torch.testing.assert_close(loss, loss_kept)
    torch.testing.assert_close(stats["ratio_mean"], stats_kept["ratio_mean"])


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_the_kl_goes_to_exactly_one_place_decided_by_the_entry(name):
    entry = ALGORITHMS[name]
    assert entry.kl_placement("reward", 0.3) == (0.3, 0.0, 0.0)  # −β·kl_t on the token rewards
    in_loss = entry.kl_placement("loss", 0.3)
    assert in_loss == ((0.0, 0.3, 0.0) if entry.owns_kl else (0.0, 0.0, 0.3))
    assert name not in ("grpo", "dr_grpo", "dapo") or entry.owns_kl  # their losses weigh k3 themselves


def test_beta_moves_the_loss_of_an_entry_that_owns_its_kl_and_no_other():
    """The stage adds the KL term for entries that do not own it, so their losses must ignore β."""
    from rlhf_lab.rollout import Rollout
    from rlhf_lab.stages.rl.experience import Experience

    g = torch.Generator().manual_seed(0)
    n, t = 4, 5
    logprobs = -torch.rand(n, t, generator=g)  # (N, T)
    ids, ones = torch.ones(n, t, dtype=torch.long), torch.ones(n, t, dtype=torch.long)
    rollout = Rollout(ids[:, :2], ones[:, :2], ids, ones, logprobs)
    # the reference 0.5 nats below π on every token, so k3 > 0; one advantage per sequence (N,)
    batch = Experience(rollout, logprobs, logprobs - 0.5, torch.randn(n, generator=g), max_new_tokens=t)
    for name in ("grpo", "dr_grpo", "dapo", "gspo", "cispo", "gmpo", "sapo"):
        entry = ALGORITHMS[name]
        without, _ = entry.loss(logprobs, None, batch, AlgoConfig(), 0.0)
        with_beta, _ = entry.loss(logprobs, None, batch, AlgoConfig(), 0.1)
        assert (with_beta.item() > without.item()) == entry.owns_kl, name
