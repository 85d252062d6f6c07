"""rlhf_lab.scorers: the length and keyword scorers (the reward-model scorer is tested with the
reward stage, in test_reward_model.py)."""

from __future__ import annotations

import pytest

from rlhf_lab.scorers import KeywordScorer, LengthScorer


def test_simple_scorers():
    assert LengthScorer().score(["p", "p"], [" a b c", ""]).tolist() == [3.0, 0.0]
    assert KeywordScorer(["great"]).score(["p"], [" Great, great! greatest."]).tolist() == [2.0]
    with pytest.raises(ValueError, match="objective.keywords"):
        KeywordScorer([])
