"""Reward-model ensembles as the objective (Coste et al. 2023): the combinations, their settings, and an
RL run whose members the pipeline builds, one per reward_model.seed."""

from __future__ import annotations

import json

import pytest
import torch

from rlhf_lab.artifacts import is_complete, read_manifest
from rlhf_lab.config import ConfigError
from rlhf_lab.pipeline import STAGES, artifact_dir, ensure, stage_key
from rlhf_lab.scorers import RewardModelScorer, combine, ensemble_metrics, objective_scorer
from tests.helpers import SMALL, csv_column

SCORES = torch.tensor([[1.0, -1.0, 0.5], [3.0, -1.0, -0.5]])  # (M=2, B=3)


def test_mean_worst_case_and_uncertainty_weighted_by_hand():
    torch.testing.assert_close(combine(SCORES, "mean"), torch.tensor([2.0, -1.0, 0.0]))
    torch.testing.assert_close(combine(SCORES, "min"), torch.tensor([1.0, -1.0, -0.5]))
    # variance over the members (1/M): 1, 0, 0.25; λ = 2
    torch.testing.assert_close(combine(SCORES, "uwo", 2.0), torch.tensor([0.0, -1.0, -0.5]))
    torch.testing.assert_close(combine(SCORES, "uwo", 0.0), combine(SCORES, "mean"))
    three = torch.tensor([[0.0], [1.0], [2.0]])  # variance 2/3
    torch.testing.assert_close(combine(three, "uwo", 1.5), torch.tensor([0.0]))
    with pytest.raises(ConfigError, match="objective.combine"):
        combine(SCORES, "max")


def test_ensemble_metrics_are_the_members_spread_and_means():
    metrics = ensemble_metrics(SCORES)
    assert metrics["ensemble_std"] == pytest.approx((1.0 + 0.0 + 0.5) / 3)
    assert metrics["ensemble_member0"] == pytest.approx(0.5 / 3)
    assert metrics["ensemble_member1"] == pytest.approx(1.5 / 3)


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["objective.combine=max"], "objective.combine"),
        (["objective.uwo_lambda=-0.1"], "objective.uwo_lambda"),
        (["objective.seeds=[0]"], "objective.seeds"),
        (["objective.seeds=[0,0]"], "objective.seeds"),
        (["objective.seeds=[]", "objective.members=[/no/such/rm,/no/such/rm2]"], "objective.members.0"),
        (["reward_model.normalize=false"], "reward_model.normalize"),
    ],
)
def test_bad_ensembles_name_the_key(overrides, key, make_cfg):
    with pytest.raises(ConfigError, match=key):
        make_cfg("objective=ensemble", *overrides)


def test_every_stage_that_scores_with_the_objective_derives_the_members(make_cfg):
    cfg = make_cfg("objective=ensemble", "objective.seeds=[3,5]", "dpo.proxy=true")
    for stage in ("rl", "bon", "eval", "dpo"):
        members = STAGES[stage].derived(cfg)
        assert list(members) == ["reward_seed3", "reward_seed5"], stage
        assert {d.stage for d in members.values()} == {"reward"}
        assert [d.cfg.reward_model.seed for d in members.values()] == [3, 5]
        assert "reward" not in STAGES[stage].upstream(cfg)
    other = make_cfg("objective=ensemble", "objective.seeds=[3,6]")
    assert stage_key(other, "rl") != stage_key(cfg, "rl")
    assert STAGES["dpo"].derived(make_cfg("objective=ensemble")) == {}  # no proxy, no judge: none built


@pytest.mark.slow
def test_rl_against_a_two_member_ensemble(make_cfg, tmp_path):
    """Both members are built (reward_model.seed 0 and 1), and the objective RL reports is their
    uncertainty-weighted combination on its held-out samples."""
    cfg = make_cfg(*SMALL, "stage=rl", "objective=ensemble", "objective.seeds=[0,1]", "objective.combine=uwo")
    out = ensure(cfg, "rl", tmp_path)

    inputs = read_manifest(out)["inputs"]
    members = [inputs[f"reward_seed{s}"] for s in (0, 1)]
    for s, member in zip((0, 1), members, strict=True):
        assert is_complete(member) and read_manifest(member)["seed"] == s
    assert str(artifact_dir(STAGES["rl"].derived(cfg)["reward_seed1"].cfg, "reward")) == members[1]

    rows = [json.loads(line) for line in open(out / "eval_samples.jsonl")]
    prompts, completions = [r["prompt"] for r in rows], [r["completion"] for r in rows]
    scores = torch.stack([RewardModelScorer(m, cfg.model).score(prompts, completions) for m in members])
    expected = combine(scores, "uwo", cfg.objective.uwo_lambda)  # (B,)
    assert not torch.equal(scores[0], scores[1])  # two different members
    scorer = objective_scorer(cfg, {f"reward_seed{s}": m for s, m in zip((0, 1), members, strict=True)})
    torch.testing.assert_close(scorer.score(prompts, completions), expected)
    last = json.loads((out / "eval.jsonl").read_text().splitlines()[-1])
    assert last["reward"] == pytest.approx(expected.mean().item(), abs=1e-5)
    spread = csv_column(tmp_path, "rl", "rl/train/ensemble_std")
    assert len(spread) == cfg.rl.max_steps and all(s > 0 for s in spread)
