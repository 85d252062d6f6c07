"""Real preference data and chat prompts through the stages (slow): a reward model trains on each
classic dataset's fixture and on a file of each TRL preference kind; the quickstart pipeline runs on
the conversational tiny world; RL samples multi-turn HH-RLHF prompts with the policy's chat template."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from rlhf_lab.artifacts import read_manifest
from rlhf_lab.config import validate
from rlhf_lab.data.formats import read_examples
from rlhf_lab.pipeline import ensure
from rlhf_lab.scorers import RewardModelScorer
from tests.helpers import PIPELINE, RL_FAST, compose_config, run, write_jsonl

FIXTURES = Path(__file__).parent / "fixtures" / "presets"
REWARD_FAST = [
    "stage=reward",
    "reward_model.init=pretrain",
    "reward_model.max_steps=4",
    "reward_model.val_every=2",
]
PRESETS = {
    "hh_rlhf": "hh_rlhf",
    "tldr": "summarize_comparisons",
    "ultrafeedback": "ultrafeedback",
    "shp": "shp",
}
GOOD, BAD = " was superb and the plot was wonderful.", " was dull and the plot was terrible."


def trl_row(kind: str, i: int) -> dict:
    """Row i of a file of `kind`: six prompts, so that one can be held out for validation."""
    prompt = f"The acting of film {i}"
    if kind == "standard":
        return {"prompt": prompt, "chosen": GOOD, "rejected": BAD}
    if kind == "standard implicit":
        return {"chosen": prompt + GOOD, "rejected": prompt + BAD}
    user, good, bad = (
        [{"role": "user", "content": prompt}],
        [{"role": "assistant", "content": GOOD}],
        [{"role": "assistant", "content": BAD}],
    )
    if kind == "conversational":
        return {"prompt": user, "chosen": good, "rejected": bad}
    return {"chosen": user + good, "rejected": user + bad}  # conversational, implicit prompt


TRL_KINDS = ["standard", "standard implicit", "conversational", "conversational implicit"]


def train_reward(tmp_path: Path, *overrides: str):
    cfg = validate(compose_config(*REWARD_FAST, *overrides))
    out = ensure(cfg, "reward", tmp_path)
    pairs, _ = read_examples(cfg.data.preferences, None, AutoTokenizer.from_pretrained(out), "error")
    return cfg, out, pairs


def check_trained(out: Path, pairs) -> None:
    """The artifact is a normalized reward model that was validated, and it scores the pairs' texts."""
    metrics = read_manifest(out)["metrics"]
    assert math.isfinite(metrics["reward/val/loss"]) and 0 <= metrics["reward/val/accuracy"] <= 1
    scorer = RewardModelScorer(out)
    assert scorer.std > 0 and scorer.mean != 0.0  # normalization ran on these samples
    chosen = scorer.score([p.prompt for p in pairs], [p.chosen for p in pairs])
    rejected = scorer.score([p.prompt for p in pairs], [p.rejected for p in pairs])
    assert chosen.isfinite().all() and not (chosen == rejected).all()


@pytest.mark.slow
@pytest.mark.parametrize("preset", list(PRESETS))
def test_each_preset_fixture_trains_a_reward_model(tmp_path, preset):
    path = FIXTURES / f"{PRESETS[preset]}.jsonl"
    margin = ["reward_model.use_margin=true"] if preset in ("ultrafeedback", "shp") else []
    cfg, out, pairs = train_reward(tmp_path, f"data={preset}", f"data.preferences.path={path}", *margin)
    assert cfg.data.preferences.format == PRESETS[preset] and len(pairs) == 6
    check_trained(out, pairs)


@pytest.mark.slow
@pytest.mark.parametrize("kind", TRL_KINDS)
def test_a_trl_preference_file_of_each_kind_trains_a_reward_model(tmp_path, kind):
    path = write_jsonl(tmp_path / "prefs.jsonl", [trl_row(kind, i) for i in range(6)])
    _, out, pairs = train_reward(
        tmp_path, "data=files", "data.sft.path=unused.jsonl", f"data.preferences.path={path}"
    )
    assert len({p.prompt for p in pairs}) == 6
    check_trained(out, pairs)


@pytest.mark.slow
def test_the_quickstart_runs_on_the_conversational_world_and_rl_on_hh_prompts(lab_home, tmp_path):
    code, output = run(
        "experiment=quickstart", "world.conversational=true", *PIPELINE, home=lab_home, cwd=tmp_path
    )
    assert code == 0, output[-3000:]
    assert "prompt rows, conversational" in output and "preference rows, conversational" in output
    summary = Path(re.search(r"summary \((.+)/summary\.md\)", output).group(1)) / "summary.md"
    assert "| sft | " in summary.read_text() and "| rl (ppo, β=0.05) | " in summary.read_text()
    result = json.loads((summary.parent / "result.json").read_text())
    artifacts = {stage: Path(p) for stage, p in result["artifacts"].items()}

    # collect wrote conversational pairs: the user's prompt, the assistant's replies
    row = json.loads((artifacts["collect"] / "preferences.jsonl").open().readline())
    assert [m["role"] for m in row["prompt"]] == ["user"]
    assert [m["role"] for m in row["chosen"]] == [m["role"] for m in row["rejected"]] == ["assistant"]
    # the reward model (the world's chat template) scores a conversation as its rendered text
    scorer = RewardModelScorer(artifacts["reward"])
    reply = row["chosen"][0]["content"]
    rendered = scorer.raw_score([row["prompt"]], [reply])
    text = scorer.raw_score([f"user: {row['prompt'][0]['content']}\nassistant:"], [reply + "</s>"])
    assert rendered.item() == pytest.approx(text.item(), abs=1e-5)
    # RL sampled the world's conversational prompts
    sample = json.loads((artifacts["rl"] / "eval_samples.jsonl").open().readline())
    assert sample["prompt"][0]["role"] == "user" and isinstance(sample["completion"], str)

    # RL on multi-turn prompts (HH-RLHF's shared turns) from the same SFT policy, rendered by its template
    hh = FIXTURES / "hh_rlhf.jsonl"
    cfg = validate(
        compose_config(
            "world.conversational=true", *RL_FAST, f"data.prompts.path={hh}", f"data.eval_prompts.path={hh}"
        )
    )
    out = ensure(cfg, "rl", tmp_path / "rl")
    samples = [json.loads(line) for line in (out / "eval_samples.jsonl").open()]
    assert [m["role"] for m in samples[2]["prompt"]] == ["user", "assistant", "user"]
    evals = [json.loads(line) for line in (out / "eval.jsonl").open()]
    assert [e["step"] for e in evals] == [0, 2] and evals[-1]["kl"] > 0  # two steps moved the policy
