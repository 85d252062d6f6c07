"""The reward-model tables of the data experiments: the ceiling each labeler allows, the RL gold peak,
and one table line per configuration with its seeds' interval."""

import json

import pytest

from rlhf_lab.report_rm import label_ceiling, rl_peak, table

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


def test_rl_peak_is_the_evaluation_with_the_most_gold(tmp_path):
    evals = [
        {"step": 0, "gold": -0.1, "kl": 0.0, "reward": 0.0},
        {"step": 5, "gold": 0.4, "kl": 3.0, "reward": 0.5},
        {"step": 10, "gold": 0.1, "kl": 9.0, "reward": 0.9},
    ]
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(e) + "\n" for e in evals))
    assert rl_peak(tmp_path) == {
        "start_gold": -0.1,
        "peak_gold": 0.4,
        "peak_kl": 3.0,
        "peak_step": 5,
        "end_gold": 0.1,
        "end_proxy": 0.9,
    }


def test_table_has_one_line_per_configuration_with_the_seed_interval():
    rows = [{"size": s, "accuracy": a} for s, a in [("small", 0.5), ("small", 0.7), ("large", 0.8)]]
    lines = table(rows, lambda r: r["size"], "size").splitlines()
    assert lines[0] == "| size | seeds | accuracy |"
    assert lines[2].startswith("| small | 2 | 0.600 ± 1.271 |")  # t(0.975, 1) = 12.706, s = 0.1414
    assert lines[3] == "| large | 1 | 0.800 |"
