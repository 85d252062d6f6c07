"""The report's reward–KL frontier: DPO, RL and best-of-n points pooled over seeds, written as a table and
a plot; and `rlhf-lab-report` on a folder of DPO runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from rlhf_lab.report import fitting, report
from rlhf_lab.report.frontier import table, write_frontier
from rlhf_lab.report.runs import Run


def dpo_run(seed: int, beta, kl: float, gold: float, loss: str = "dpo") -> Run:
    config = {"seed": seed, "dpo": {"loss": loss, "beta": beta, "rounds": 1}}
    return Run(
        Path(f"dpo{seed}"), "completed", config=config, metrics={"dpo/eval/kl": kl, "dpo/eval/gold": gold}
    )


def test_points_are_pooled_over_seeds_per_method_and_beta():
    runs = [
        dpo_run(0, 0.1, 1.0, 0.2),
        dpo_run(1, 0.1, 3.0, 0.4),
        dpo_run(0, None, 5.0, 0.1, loss="simpo"),  # beta null: the loss's paper value, 2.0
        Run(
            Path("ppo"),
            "completed",
            config={"algo": {"name": "ppo", "kl": {"beta": 0.05}}, "objective": {"kind": "rm"}},
            metrics={"rl/eval/kl": 6.0, "rl/eval/gold": 0.5},
        ),
        Run(Path("bon"), "completed", metrics={"bon/n4/gold": 0.3, "bon/n4/kl": 0.64, "bon/n4/proxy": 1.0}),
        Run(Path("failed"), "failed", metrics={"dpo/eval/kl": 9.0, "dpo/eval/gold": 9.0}),
    ]
    rows = {(r["method"], r["value"]): r for r in table(runs)}
    assert set(rows) == {("DPO (dpo)", 0.1), ("DPO (simpo)", 2.0), ("RL (ppo, rm)", 0.05), ("best-of-n", 4.0)}
    dpo = rows[("DPO (dpo)", 0.1)]
    assert dpo["seeds"] == 2 and dpo["kl"] == pytest.approx(2.0) and dpo["gold"] == pytest.approx(0.3)
    assert dpo["gold_ci"] == pytest.approx(fitting.mean_interval([0.2, 0.4])[1])
    assert rows[("best-of-n", 4.0)]["param"] == "n" and rows[("best-of-n", 4.0)]["kl"] == pytest.approx(0.64)


def test_frontier_files_and_none_without_points(tmp_path):
    assert write_frontier([Run(Path("x"), "completed", metrics={"sft/val/loss": 1.0})], tmp_path) == ""
    text = write_frontier([dpo_run(0, 0.1, 1.0, 0.2), dpo_run(1, 0.1, 3.0, 0.4)], tmp_path)
    assert "| DPO (dpo) | β=0.1 | 2 | 2.000 ± " in text
    assert {p.name for p in tmp_path.iterdir()} == {"frontier.csv", "frontier.md", "frontier.png"}


def test_the_report_of_dpo_runs_has_their_frontier_and_headline(tmp_path):
    for seed, (kl, gold) in enumerate([(1.0, 0.2), (3.0, 0.4)]):  # two seeds of one DPO configuration
        job = tmp_path / str(seed)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "config.yaml").write_text(
            yaml.safe_dump({"seed": seed, "dpo": {"loss": "dpo", "beta": 0.1}})
        )
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["stage=dpo", f"dpo.seed={seed}"]))
        metrics = {"dpo/eval/kl": kl, "dpo/eval/gold": gold, "dpo/eval/win_rate": 0.6}
        (job / "result.json").write_text(
            json.dumps({"status": "completed", "metrics": metrics, "artifacts": {}})
        )
    markdown, _ = report(tmp_path)
    assert "dpo/eval/gold" in markdown and "| DPO (dpo) | β=0.1 | 2 |" in markdown
    assert (tmp_path / "report" / "frontier.png").is_file()
