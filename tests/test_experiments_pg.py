"""The experiment files of the policy-gradient ablations: every variant composes and validates, changes
exactly what it names, and starts from the same SFT policy and reward model as its baseline; the
algorithms of pg_family see the same number of samples."""

from __future__ import annotations

import dataclasses

import pytest

from rlhf_lab.cli import CONF_DIR
from rlhf_lab.config import validate
from rlhf_lab.pipeline import stage_key
from rlhf_lab.stages.rl.algorithms import ALGORITHMS
from tests.helpers import compose_config


def typed(*overrides: str):
    return validate(compose_config(*overrides, fast=False))


def leaves(node, path: str = "") -> dict:
    """Every leaf of a dataclass tree as {dotted.path: value}."""
    if dataclasses.is_dataclass(node):
        out = {}
        for f in dataclasses.fields(node):
            out |= leaves(getattr(node, f.name), f"{path}{f.name}.")
        return out
    return {path.rstrip("."): node}


def changed(base, variant) -> dict:
    a, b = leaves(base), leaves(variant)
    return {k: b.get(k) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k) and k != "experiment"}


PPO_DETAILS = {  # variant: what it must change, and nothing else
    "no_reward_whitening": {"algo.whiten_rewards": False},
    "no_advantage_whitening": {"algo.whiten_advantages": False},
    "value_head": {"algo.value.model": "head"},
    "no_eos_trick": {"algo.missing_eos_penalty": None},
    "dropout_on": {"algo.dropout": 0.1},
    "untempered_logprobs": {"algo.scale_logprobs": False},
    "no_value_clipping": {"algo.value.clip": None},
}


def test_every_ppo_detail_file_is_listed_here():
    assert {p.stem for p in (CONF_DIR / "experiment" / "ppo_details").glob("*.yaml")} == set(PPO_DETAILS)


def test_the_ppo_details_baseline_has_every_detail_on(lab_home):
    cfg = typed("experiment=ppo_details")
    algo = cfg.algo
    assert (algo.name, algo.value.model, algo.whiten_rewards, algo.whiten_advantages) == (
        "ppo",
        "critic",
        True,
        True,
    )
    assert (algo.missing_eos_penalty, algo.dropout, algo.scale_logprobs, algo.value.clip) == (
        -1.0,
        0.0,
        True,
        0.2,
    )
    assert cfg.rl.sampling.temperature != 1.0, "temperature-scaled log-probs matter only away from T = 1"


@pytest.mark.parametrize("variant", PPO_DETAILS)
def test_each_ppo_detail_variant_switches_off_one_detail(variant, lab_home):
    base, cfg = typed("experiment=ppo_details"), typed(f"experiment=ppo_details/{variant}")
    assert changed(base, cfg) == PPO_DETAILS[variant]
    assert all(stage_key(cfg, s) == stage_key(base, s) for s in ("sft", "reward"))


@pytest.mark.parametrize("rank", [4, 16, 64])
def test_lora_variants_change_only_the_rl_policy(rank, lab_home):
    base, cfg = typed("experiment=lora_rank"), typed(f"experiment=lora_rank/r{rank}")
    assert set(changed(base, cfg)) <= {"rl.lr", "rl.peft.method", "rl.peft.r"}  # r 16 is the default
    assert (cfg.rl.peft.method, cfg.rl.peft.r, cfg.rl.peft.alpha) == ("lora", rank, 32)  # alpha at every rank
    assert cfg.rl.lr == pytest.approx(10 * base.rl.lr)
    assert base.peft.method == "none" and cfg.peft.method == "none", "SFT and the reward model: full"
    assert all(stage_key(cfg, s) == stage_key(base, s) for s in ("sft", "reward"))
    assert stage_key(cfg, "rl") != stage_key(base, "rl")


@pytest.mark.slow  # nine configurations composed: about 3 s
def test_pg_family_gives_every_algorithm_the_same_samples(lab_home):
    samples = set()
    for name in [*ALGORITHMS, "ppo_critic"]:
        cfg = typed("experiment=pg_family", f"algo={name}")
        samples.add(cfg.rl.max_steps * cfg.rl.rollouts_per_step)
        assert cfg.stage == "rl" and stage_key(cfg, "reward") == stage_key(
            typed("experiment=pg_family"), "reward"
        )
    assert samples == {24 * 64}
