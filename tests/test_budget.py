"""The budget of a training run (rlhf_lab/budget.py): its totals, the 6N rule, the parameters it counts,
budget.jsonl and the restore of a resumed run; and a DPO run's budget in eval.jsonl (slow)."""

from __future__ import annotations

import json

import pytest

from rlhf_lab import budget
from rlhf_lab.budget import Budget, flops, matmul_params, scorer_params
from tests.helpers import SMALL, TINY_LLAMA, tiny_llama


def test_a_budget_adds_what_each_step_spends():
    b = Budget()
    b.spend(samples=8, tokens=70, updates=4, flops=1000, seconds=1.5)
    b.spend(samples=8, tokens=66, updates=4, flops=900, seconds=0.5)
    assert b.counts() == {"samples": 16, "tokens": 136, "updates": 8, "flops": 1900}
    assert b.wall_time == 2.0


def test_flops_are_2n_per_token_forward_and_6n_trained():
    assert flops(1000, 10) == 20_000
    assert flops(1000, 10, trained=True) == 60_000


@pytest.mark.parametrize("tied", [False, True])
def test_matmul_params_leave_out_the_input_embeddings_but_not_the_output_layer(tied):
    model = tiny_llama(tie_word_embeddings=tied)
    hidden, vocab, layers = (
        TINY_LLAMA["hidden_size"],
        TINY_LLAMA["vocab_size"],
        TINY_LLAMA["num_hidden_layers"],
    )
    heads, kv = TINY_LLAMA["num_attention_heads"], TINY_LLAMA["num_key_value_heads"]
    kv_width = hidden // heads * kv
    attention = 2 * hidden * hidden + 2 * hidden * kv_width  # q, o; k, v
    mlp = 3 * hidden * TINY_LLAMA["intermediate_size"]  # gate, up, down
    by_hand = (
        layers * (attention + mlp + 2 * hidden) + hidden + vocab * hidden
    )  # + norms, final norm, lm_head
    assert matmul_params(model) == by_hand
    assert matmul_params(None) == 0


def test_a_resumed_run_restores_the_budget_of_its_step_and_drops_later_rows(tmp_path):
    path = tmp_path / budget.BUDGET
    for step in (1, 2, 3):
        budget.append(
            path, step, Budget(samples=8 * step, tokens=60 * step, updates=step, flops=step, wall_time=step)
        )
    restored = budget.restore(path, 2)
    assert restored == Budget(samples=16, tokens=120, updates=2, flops=2, wall_time=2.0)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]
    assert budget.read(path)[2]["wall_time"] == 2.0


def test_a_checkpoint_older_than_the_budget_restarts_the_count(tmp_path):
    assert budget.restore(tmp_path / budget.BUDGET, 5) == Budget()


@pytest.mark.slow
def test_a_scorer_counts_its_reward_models(reward_run):
    from rlhf_lab.scorers import EnsembleScorer, GoldScorer, LengthScorer, RewardModelScorer

    cfg, artifact, _ = reward_run
    rm = RewardModelScorer(artifact, cfg.model)
    assert scorer_params(rm) == matmul_params(rm.model) > 0
    assert scorer_params(EnsembleScorer([rm, rm], "mean")) == 2 * scorer_params(rm)
    assert scorer_params(GoldScorer("vader")) == scorer_params(LengthScorer()) == scorer_params(None) == 0


@pytest.mark.slow
def test_a_dpo_run_records_its_budget_at_every_evaluation(make_cfg, tmp_path):
    from rlhf_lab.artifacts import read_manifest
    from rlhf_lab.models import folder_settings, load_causal_lm, load_tokenizer
    from rlhf_lab.pipeline import ensure

    cfg = make_cfg(*SMALL, "stage=dpo", "dpo.max_steps=4", "dpo.eval_every=2")
    out = ensure(cfg, "dpo", tmp_path)
    evals = [json.loads(line) for line in (out / "eval.jsonl").read_text().splitlines()]
    steps = budget.read(out / budget.BUDGET)
    assert [e["budget_updates"] for e in evals] == [e["step"] for e in evals] == [0, 2, 4]
    assert all(e["budget_samples"] == e["budget_tokens"] == 0 for e in evals)  # offline: it samples nothing
    assert [steps[e["step"]]["flops"] for e in evals[1:]] == [e["budget_flops"] for e in evals[1:]]
    sft = read_manifest(out)["inputs"]["sft"]
    settings = folder_settings(cfg.model)
    n = matmul_params(load_causal_lm(sft, settings, load_tokenizer(sft, settings)))
    spent = [steps[1]["flops"]] + [steps[s]["flops"] - steps[s - 1]["flops"] for s in (2, 3, 4)]
    assert all(f % (6 * n) == 0 for f in spent[1:]), "a step after the first: 6N per token of its batch"
    assert spent[0] % (2 * n) == 0 and spent[0] > max(spent[1:]), "the first also passes the reference"
    assert steps[4]["wall_time"] > 0
    metrics = read_manifest(out)["metrics"]
    assert metrics["dpo/budget/updates"] == 4 and metrics["dpo/budget/flops"] == steps[4]["flops"]
