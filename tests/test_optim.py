"""rlhf_lab.optim: the learning-rate schedule (warmup, then cosine, linear or constant to a floor)."""

from __future__ import annotations

import pytest

from rlhf_lab.optim import lr_multiplier


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    warm = [lr_multiplier(s, 10, 100, "cosine", 0.1) for s in range(10)]
    assert all(a < b for a, b in zip(warm, warm[1:], strict=False)) and warm[-1] < 1
    assert lr_multiplier(10, 10, 100, "cosine", 0.1) == pytest.approx(1.0)
    assert lr_multiplier(55, 10, 100, "cosine", 0.1) == pytest.approx(0.55)
    assert lr_multiplier(100, 10, 100, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_multiplier(55, 10, 100, "linear", 0.0) == pytest.approx(0.5)
    assert lr_multiplier(99, 10, 100, "constant", 0.1) == 1.0
