"""experiments/dpo_vs_ppo/paired.py: each DPO β against the PPO β of nearest mean KL at or below its own,
gold compared seed by seed, from rlhf-lab-report's runs.csv."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "experiments" / "dpo_vs_ppo" / "paired.py"
spec = importlib.util.spec_from_file_location("paired", SCRIPT)
paired = importlib.util.module_from_spec(spec)
spec.loader.exec_module(paired)

FIELDS = ["status", "stage", "dpo.beta", "dpo.seed", "dpo/eval/kl", "dpo/eval/gold"]
FIELDS += ["algo.kl.beta", "rl.seed", "rl/eval/kl", "rl/eval/gold"]


def write_runs(path: Path) -> Path:
    rows = []
    for seed, (dpo_gold, ppo_gold) in enumerate([(0.2, 0.3), (0.1, 0.3), (0.3, 0.3)]):
        rows.append(
            {
                "stage": "dpo",
                "dpo.beta": "0.1",
                "dpo.seed": seed,
                "dpo/eval/kl": 6.0,
                "dpo/eval/gold": dpo_gold,
            }
        )
        # PPO at KL 5 (at or below DPO's 6) and at KL 6.9 (above): the first is the partner
        rows.append(
            {
                "stage": "rl",
                "algo.kl.beta": "0.05",
                "rl.seed": seed,
                "rl/eval/kl": 5.0,
                "rl/eval/gold": ppo_gold,
            }
        )
        rows.append(
            {"stage": "rl", "algo.kl.beta": "0.02", "rl.seed": seed, "rl/eval/kl": 6.9, "rl/eval/gold": 9.0}
        )
    rows.append({"stage": "bon"})  # best-of-n rows are not points here
    rows.append({"stage": "dpo", "dpo.beta": "0.1", "dpo.seed": 3})  # a failed run
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        for row in rows:
            status = "failed" if row.get("dpo.seed") == 3 else "completed"
            writer.writerow({"status": status, **row})
    return path


def test_each_dpo_beta_meets_the_ppo_beta_at_or_below_its_kl_seed_by_seed(tmp_path):
    lines = paired.table(paired.read_points(write_runs(tmp_path / "runs.csv")))
    assert len(lines) == 3  # header, rule, one DPO β
    # PPO − DPO by seed: 0.1, 0.2, 0.0: mean 0.1, half-width t(0.975, 2)·0.1/√3 = 0.248
    assert lines[2] == "| 0.1 | 6.0 | 0.05 | 5.0 | 3 | 0.100 ± 0.248 |"


def test_with_no_ppo_beta_at_or_below_the_nearest_above_is_taken():
    assert paired.partner(4.0, {"0.05": 5.0, "0.02": 8.0}) == "0.05"
    assert paired.partner(6.0, {"0.05": 5.0, "0.2": 2.0, "0.02": 8.0}) == "0.05"
