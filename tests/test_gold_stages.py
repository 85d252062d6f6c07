"""A reward-model artifact as the gold, through every stage that scores with gold (issue 24, item 2):
collect, best-of-n, eval, RL and DPO report exactly what `RewardModelScorer` gives on the same texts,
and their cache keys know the artifact by its own key wherever its folder lies.

One pipeline for the module: `eval` with `eval.policies=[rl,dpo]` builds collect, rl, dpo, bon and eval
on the session's reward artifact (which is both the gold and, at `objective.path`, the proxy)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from rlhf_lab.config import validate
from rlhf_lab.pipeline import ensure, ensure_with_inputs, stage_key
from rlhf_lab.scorers import RewardModelScorer
from tests.helpers import SMALL, compose_config

pytestmark = pytest.mark.slow
GOLD_STAGES = ("collect", "bon", "eval", "rl", "dpo")


def gold_config(gold: Path, proxy: Path, *overrides: str):
    return validate(
        compose_config(
            *SMALL,
            f"gold={gold}",
            "objective=rm",
            f"objective.path={proxy}",
            "eval.policies=[rl,dpo]",
            *overrides,
        )
    )


@pytest.fixture(scope="module")
def gold_run(reward_run, tmp_path_factory):
    """(config, artifacts by stage, the gold's scorer) of the pipeline with the reward artifact as gold."""
    base, rm_dir, _ = reward_run
    cfg = gold_config(rm_dir, rm_dir)
    artifacts = ensure_with_inputs(cfg, "eval", tmp_path_factory.mktemp("run"))
    return cfg, artifacts, RewardModelScorer(rm_dir, cfg.model)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open()]


def samples_gold(scorer: RewardModelScorer, folder: Path) -> float:
    """The reward model's mean score of the last evaluation's samples of a training run."""
    rows = read_jsonl(folder / "eval_samples.jsonl")
    return scorer.score([r["prompt"] for r in rows], [r["completion"] for r in rows]).mean().item()


def test_collect_labels_with_the_reward_models_scores(gold_run):
    _, artifacts, scorer = gold_run
    rows = read_jsonl(artifacts["collect"] / "preferences.jsonl")
    prompts = [r["prompt"] for r in rows]
    for side in ("chosen", "rejected"):
        expected = scorer.score(prompts, [r[side] for r in rows])
        torch.testing.assert_close(torch.tensor([r[f"gold_{side}"] for r in rows]), expected)


def test_best_of_n_and_eval_gold_equal_the_same_reward_model_as_proxy(gold_run):
    """The proxy (objective.path) and the gold are one folder: every gold equals its proxy."""
    _, artifacts, _ = gold_run
    bon = json.loads((artifacts["bon"] / "bon.json").read_text())
    summary = json.loads((artifacts["eval"] / "summary.json").read_text())
    assert len(bon) == 4 and len(summary) == 3 + 4  # sft, rl, dpo; best-of-1, 2, 4, 8
    for row in [*bon, *summary]:
        assert row["gold"] == pytest.approx(row.get("proxy", row.get("reward")), abs=1e-5), row


@pytest.mark.parametrize("stage", ["rl", "dpo"])
def test_training_runs_evaluate_with_the_reward_models_scores(gold_run, stage):
    _, artifacts, scorer = gold_run
    last = read_jsonl(artifacts[stage] / "eval.jsonl")[-1]
    assert last["gold"] == pytest.approx(samples_gold(scorer, artifacts[stage]), abs=1e-5)
    if stage == "rl":
        assert last["gold"] == pytest.approx(last["reward"], abs=1e-5)  # the same folder as proxy


def test_keys_know_the_artifact_wherever_it_lies(gold_run, reward_run, tmp_path):
    """A copy of the gold's folder keys every stage alike; another reward artifact does not."""
    cfg, _, _ = gold_run
    _, rm_dir, run_dir = reward_run
    copy = shutil.copytree(rm_dir, tmp_path / "copy")
    other = ensure(validate(compose_config(*SMALL, "reward_model.seed=1")), "reward", run_dir)
    moved, changed = gold_config(copy, rm_dir), gold_config(other, rm_dir)
    for stage in GOLD_STAGES:
        assert stage_key(moved, stage) == stage_key(cfg, stage), stage
        assert stage_key(changed, stage) != stage_key(cfg, stage), stage
