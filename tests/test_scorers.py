"""rlhf_lab.scorers: the length and keyword scorers, and a reward model as the gold (the reward-model
scorer itself is tested with the reward stage, in test_reward_model.py)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from rlhf_lab.scorers import KeywordScorer, LengthScorer, RewardModelScorer, gold_scorer, objective_scorer


def test_simple_scorers():
    assert LengthScorer().score(["p", "p"], [" a b c", ""]).tolist() == [3.0, 0.0]
    assert KeywordScorer(["great"]).score(["p"], [" Great, great! greatest."]).tolist() == [2.0]
    with pytest.raises(ValueError, match="objective.keywords"):
        KeywordScorer([])


@pytest.mark.slow
def test_a_reward_model_folder_as_the_gold_scores_as_the_reward_model(reward_run):
    """`gold` naming a reward artifact: gold_scorer (which every stage that scores with gold calls) and
    objective=gold give exactly the numbers of RewardModelScorer on that folder."""
    cfg, rm_dir, _ = reward_run
    prompts = ["The acting", "Hazel Ortega is", "The plot was not"]
    completions = [" was superb overall.", " dull as the sailor.", " bad at all."]
    expected = RewardModelScorer(rm_dir, cfg.model).score(prompts, completions)
    as_gold = dataclasses.replace(cfg, gold=str(rm_dir))
    gold = gold_scorer(as_gold)
    assert isinstance(gold, RewardModelScorer)
    torch.testing.assert_close(gold.score(prompts, completions), expected, rtol=0, atol=0)
    objective = dataclasses.replace(as_gold, objective=dataclasses.replace(cfg.objective, kind="gold"))
    torch.testing.assert_close(
        objective_scorer(objective, {}).score(prompts, completions), expected, rtol=0, atol=0
    )
    assert len(set(expected.tolist())) == len(prompts)  # the numbers tell the texts apart
