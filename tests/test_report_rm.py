"""The tables of the experiments on overoptimization and the reward model's data: the signature of an
RL run (peak, trough, end), the ceiling each labeler allows, one line per configuration with its
seeds' interval."""

import pytest

from rlhf_lab.report.fits import signature
from rlhf_lab.report.rm import label_ceiling, table

REWARD = {"reward/val/bt_ceiling": 0.81}
COLLECT = {"collect/label_ceiling": 0.74}


@pytest.mark.parametrize(
    ("labeler", "ceiling"),
    [
        ({"kind": "bt", "ceiling": 0.8}, 0.81),  # realized on the validation pairs, not the target
        ({"kind": "argmax"}, 1.0),
        ({"kind": "flip", "epsilon": 0.25}, 0.75),
        ({"kind": "pool"}, 0.74),
        ({"kind": "file", "path": "labels.jsonl"}, None),
    ],
)
def test_label_ceiling_per_labeler(labeler, ceiling):
    assert label_ceiling(labeler, COLLECT, REWARD) == ceiling


def test_signature_finds_the_gold_peak_the_trough_after_it_and_the_end():
    evals = [
        {"step": 0, "gold": -0.1, "kl": 0.0, "reward": 0.0},
        {"step": 5, "gold": 0.4, "kl": 3.0, "reward": 0.5},
        {"step": 10, "gold": -0.5, "kl": 9.0, "reward": 0.9},
        {"step": 15, "gold": 0.1, "kl": 12.0, "reward": 1.2},
    ]
    row = signature(evals)
    assert (row["peak_step"], row["peak_kl"], row["peak_proxy"]) == (5, 3.0, 0.5)
    assert (row["trough_step"], row["trough_gold"]) == (10, -0.5)
    assert (row["start_gold"], row["end_step"], row["end_gold"]) == (-0.1, 15, 0.1)
    assert row["gold_drop"] == pytest.approx(0.9)
    assert row["gold_drop_to_end"] == pytest.approx(0.3)
    assert row["proxy_rise"] == pytest.approx(0.7)


def test_table_has_one_line_per_configuration_with_the_seed_interval():
    rows = [{"size": s, "accuracy": a} for s, a in [("small", 0.5), ("small", 0.7), ("large", 0.8)]]
    lines = table(rows, lambda r: r["size"], "size").splitlines()
    assert lines[0] == "| size | seeds | accuracy |"
    assert lines[2].startswith("| small | 2 | 0.600 ± 1.271 |")  # t(0.975, 1) = 12.706, s = 0.1414
    assert lines[3] == "| large | 1 | 0.800 |"
