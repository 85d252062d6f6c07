"""Collect, reward model and best-of-n on a small tiny world."""

from __future__ import annotations

import itertools
import json
import math

import datasets
import pytest
import torch
from transformers import AutoModelForSequenceClassification

from rlhf_lab.artifacts import read_manifest
from rlhf_lab.pipeline import ensure
from rlhf_lab.scorers import KeywordScorer, LengthScorer, RewardModelScorer
from rlhf_lab.stages.bon import best_of_n_expectation
from rlhf_lab.stages.collect import candidate_pairs, sample_in_chunks
from rlhf_lab.stages.common import Context
from rlhf_lab.stages.reward import (
    WeightEMA,
    add_training_dropout,
    calibration_error,
    pairwise_metrics,
)

SMALL = [
    "collect.num_prompts=48",
    "collect.samples_per_prompt=3",
    "collect.chunk=16",
    "collect.sampling.max_new_tokens=16",
    "labeler=bt",
    "labeler.temperature=0.2",
    "reward_model.max_steps=12",
    "reward_model.val_every=6",
    "reward_model.batch_size=8",
    "bon.n=[1,2,4,8]",
    "bon.num_prompts=12",
    "bon.sampling.max_new_tokens=16",
]


@pytest.fixture(scope="module")
def reward_run(tmp_path_factory):
    """The reward artifact (and its collect artifact) of the fast config."""
    from rlhf_lab.config import validate
    from tests.conftest import compose_config

    cfg = validate(compose_config(*SMALL))
    run_dir = tmp_path_factory.mktemp("run")
    return cfg, ensure(cfg, "reward", run_dir), run_dir


def test_candidate_pairs():
    assert candidate_pairs(4, "all") == list(itertools.combinations(range(4), 2))
    assert candidate_pairs(4, "adjacent") == [(0, 1), (1, 2), (2, 3)]


def test_collect_writes_trl_preferences_with_gold_columns(reward_run):
    cfg, rm_dir, _ = reward_run
    collect_dir = read_manifest(rm_dir)["inputs"]["collect"]
    rows = [json.loads(line) for line in open(f"{collect_dir}/preferences.jsonl")]
    assert rows and {
        "prompt",
        "chosen",
        "rejected",
        "gold_chosen",
        "gold_rejected",
        "labeler",
        "policy",
    } <= set(rows[0])
    assert len(rows) <= 48 * 3  # at most K(K-1)/2 = 3 pairs per prompt
    assert all(r["chosen"] != r["rejected"] and r["chosen"].strip() and r["rejected"].strip() for r in rows)
    on_disk = datasets.load_from_disk(f"{collect_dir}/preferences")
    assert on_disk.num_rows == len(rows) and on_disk[0]["chosen"] == rows[0]["chosen"]
    metrics = read_manifest(collect_dir)["metrics"]
    assert metrics["collect/bt_temperature"] == 0.2 and 0.5 <= metrics["collect/bt_ceiling"] <= 1


def test_argmax_labels_agree_with_gold(make_cfg, tmp_path):
    cfg = make_cfg(*SMALL, "labeler=argmax", "collect.pairs=adjacent")
    out = ensure(cfg, "collect", tmp_path)
    rows = [json.loads(line) for line in (out / "preferences.jsonl").open()]
    assert rows and all(r["gold_chosen"] > r["gold_rejected"] for r in rows)
    assert read_manifest(out)["metrics"]["collect/gold_agreement"] == 1.0


def test_collect_resumes_finished_chunks_and_matches_an_uninterrupted_run(make_cfg, tmp_path, reward_run):
    cfg = make_cfg(*SMALL)
    ctx = Context(cfg, tmp_path, inputs={"sft": ensure(cfg, "sft", tmp_path)})
    prompts = [f"The film number {i} was" for i in range(40)]
    full = sample_in_chunks(ctx, str(ctx.inputs["sft"]), prompts, tmp_path / "full")
    partial_dir = tmp_path / "resumed"
    sample_in_chunks(ctx, str(ctx.inputs["sft"]), prompts[:16], partial_dir)  # "interrupted" after chunk 0
    stamp = (partial_dir / "00000.jsonl").stat().st_mtime_ns
    resumed = sample_in_chunks(ctx, str(ctx.inputs["sft"]), prompts, partial_dir)
    assert (partial_dir / "00000.jsonl").stat().st_mtime_ns == stamp  # not redone
    assert resumed == full


def test_reward_model_reloads_normalized_on_policy_samples(reward_run):
    cfg, rm_dir, _ = reward_run
    model = AutoModelForSequenceClassification.from_pretrained(rm_dir)
    assert model.config.num_labels == 1 and model.config.reward_std > 0
    collect_dir = read_manifest(rm_dir)["inputs"]["collect"]
    samples = [json.loads(line) for line in open(f"{collect_dir}/samples.jsonl")]
    prompts = [s["prompt"] for s in samples for _ in s["completions"]]
    completions = [c for s in samples for c in s["completions"]]
    scores = RewardModelScorer(rm_dir).score(prompts, completions)
    assert abs(scores.mean().item()) < 1e-3 and scores.std().item() == pytest.approx(1.0, abs=1e-3)
    metrics = read_manifest(rm_dir)["metrics"]
    for key in ("reward/val/accuracy", "reward/val/gold_accuracy", "reward/val/bt_ceiling", "reward/val/ece"):
        assert 0 <= metrics[key] <= 1


@pytest.fixture(scope="module")
def sum_reward_run(tmp_path_factory):
    """The reward artifact of the fast config with the head summed over the completion's tokens."""
    from rlhf_lab.config import validate
    from tests.conftest import compose_config

    cfg = validate(compose_config(*SMALL, "reward_model.pool=sum"))
    return cfg, ensure(cfg, "reward", tmp_path_factory.mktemp("run"))


def test_reward_inputs_mark_the_completion_and_its_eos(reward_run):
    from rlhf_lab.models import load_tokenizer, reward_inputs

    cfg, rm_dir, _ = reward_run
    tokenizer = load_tokenizer(rm_dir, cfg.model)
    prompts, completions = ["The film", "The acting in this long movie was"], [" was great.", " dull."]
    inputs = reward_inputs(tokenizer, prompts, completions, 512)
    for ids, mask, completion, real in zip(
        inputs["input_ids"], inputs["completion_mask"], completions, inputs["attention_mask"], strict=True
    ):
        assert tokenizer.decode(ids[mask]) == completion + tokenizer.eos_token
        assert not (mask & ~real.bool()).any()  # never a pad token
    cut = reward_inputs(tokenizer, ["The acting in this long movie was"], [" dull."], 4)  # prompt cut short
    assert cut["completion_mask"][0].tolist() == [False, False, False, True]  # the EOS is still scored


@pytest.mark.parametrize("run", ["reward_run", "sum_reward_run"])
def test_reward_score_ignores_padding_side_and_batch_composition(run, request):
    from rlhf_lab.models import reward_inputs

    rm_dir = request.getfixturevalue(run)[1]
    scorer = RewardModelScorer(rm_dir, batch_size=8)
    prompts = ["The film", "The acting in this long movie was", "I"]
    completions = [" was great.", " dull and slow, but the score was lovely.", " hated it."]
    together = scorer.raw_score(prompts, completions)
    alone = torch.cat([scorer.raw_score([p], [c]) for p, c in zip(prompts, completions, strict=True)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)
    # right padding, as a user's own code might do, scores the same tokens
    inputs = reward_inputs(scorer.tokenizer, prompts, completions, 512)
    real = inputs["attention_mask"].bool()  # (B, L)

    def right(t):  # (B, L) moved from left to right padding
        return torch.stack([torch.cat([row[m], row[~m]]) for row, m in zip(t, real, strict=True)])

    input_ids, mask = right(inputs["input_ids"]), right(real).long()
    with torch.no_grad():
        if scorer.pool == "last":  # HF's own read-out finds the final real token
            expected = scorer.model(input_ids=input_ids, attention_mask=mask).logits[:, 0]
        else:
            hidden = scorer.model.base_model(input_ids=input_ids, attention_mask=mask).last_hidden_state
            per_token = scorer.model.score(hidden)[..., 0]  # (B, L)
            expected = (per_token * right(inputs["completion_mask"])).sum(-1)
    torch.testing.assert_close(expected, together, atol=1e-5, rtol=0)


def test_a_summed_head_starts_at_zero_and_is_recorded_for_the_scorer(sum_reward_run, reward_run):
    from rlhf_lab.models import load_reward_model, load_tokenizer

    cfg, rm_dir = sum_reward_run
    sft = read_manifest(rm_dir)["inputs"]["sft"]
    fresh = load_reward_model(sft, cfg.model, load_tokenizer(sft, cfg.model), new_head=True, pool="sum")
    assert fresh.config.reward_pool == "sum" and not fresh.score.weight.any()
    assert RewardModelScorer(reward_run[1]).pool == "last"
    trained = RewardModelScorer(rm_dir).model
    assert trained.config.reward_pool == "sum" and trained.score.weight.abs().sum() > 0  # it learned


def test_pairwise_metrics_and_calibration():
    diff = torch.tensor([2.0, 1.0, -1.0, 0.5])
    gap = torch.tensor([0.8, -0.1, -0.6, float("nan")])
    m = pairwise_metrics(diff, gap, temperature=0.5)
    assert m["accuracy"] == 0.75
    assert m["gold_accuracy"] == pytest.approx(2 / 3)  # pairs 1 and 3 agree with gold, pair 2 does not
    assert m["gold_accuracy_clear"] == 1.0  # |gap| > 0.5: pairs 1 and 3
    expected_ceiling = (torch.sigmoid(torch.tensor([0.8, 0.1, 0.6]) / 0.5)).mean().item()
    assert m["bt_ceiling"] == pytest.approx(expected_ceiling)
    assert m["gold_label_accuracy"] == pytest.approx(1 / 3)  # only the first label agrees with gold
    assert calibration_error(torch.tensor([0.9] * 9 + [0.1])) == pytest.approx(0.0, abs=1e-6)
    assert calibration_error(torch.tensor([0.99] * 5 + [0.01] * 5)) == pytest.approx(0.49, abs=1e-6)


def test_best_of_n_expectation_equals_the_mean_over_all_subsets():
    gen = torch.Generator().manual_seed(0)
    proxy, target = torch.randn(3, 6, generator=gen), torch.randn(3, 6, generator=gen)
    for n in (1, 2, 3, 6):
        brute = torch.stack(
            [
                torch.stack(
                    [
                        target[b, list(s)][proxy[b, list(s)].argmax()]
                        for s in itertools.combinations(range(6), n)
                    ]
                ).mean()
                for b in range(3)
            ]
        )
        torch.testing.assert_close(best_of_n_expectation(proxy, target, n), brute, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="n=7"):
        best_of_n_expectation(proxy, target, 7)


def test_best_of_n_with_the_gold_scorer_rises_with_n(make_cfg, tmp_path):
    cfg = make_cfg(*SMALL, "stage=bon", "objective=gold")
    out = ensure(cfg, "bon", tmp_path)
    table = json.loads((out / "bon.json").read_text())
    gold = [r["gold"] for r in table]
    assert [r["n"] for r in table] == [1, 2, 4, 8]
    assert all(a <= b + 1e-9 for a, b in zip(gold, gold[1:], strict=False)) and gold[-1] > gold[0]
    assert [r["proxy"] for r in table] == pytest.approx(gold)
    assert [r["kl"] for r in table] == pytest.approx([math.log(n) - (n - 1) / n for n in (1, 2, 4, 8)])
    assert (out / "bon.png").stat().st_size > 10_000 and (out / "bon.csv").is_file()


def test_best_of_n_with_the_reward_model_reports_proxy_and_gold(reward_run, tmp_path):
    cfg, rm_dir, _ = reward_run
    from dataclasses import replace

    bon_cfg = replace(cfg, stage="bon")
    out = ensure(bon_cfg, "bon", tmp_path)
    assert read_manifest(out)["inputs"]["reward"] == str(rm_dir)
    table = json.loads((out / "bon.json").read_text())
    proxy = [r["proxy"] for r in table]
    assert all(a <= b + 1e-9 for a, b in zip(proxy, proxy[1:], strict=False))  # best-of-n maximizes the proxy
    assert all("gold" in r for r in table)


def test_simple_scorers():
    assert LengthScorer().score(["p", "p"], [" a b c", ""]).tolist() == [3.0, 0.0]
    assert KeywordScorer(["great"]).score(["p"], [" Great, great! greatest."]).tolist() == [2.0]
    with pytest.raises(ValueError, match="objective.keywords"):
        KeywordScorer([])


def test_reward_model_with_lora_exports_a_merged_sequence_classifier(reward_run, make_cfg, tmp_path):
    cfg = make_cfg(
        *SMALL,
        "peft=lora",
        "peft.r=4",
        "reward_model.max_steps=4",
        "reward_model.warmup_steps=1",
        "reward_model.normalize=false",
        "reward_model.dropout=0.1",  # training-only dropout and a weight average, through a LoRA wrapper
        "reward_model.ema_decay=0.5",
        "reward_model.pool=sum",  # the summed head of a peft model, exported merged
    )
    out = ensure(cfg, "reward", tmp_path)
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.num_labels == 1
    scorer = RewardModelScorer(out)
    scores = scorer.score(["The film"], [" was great."])
    assert scorer.pool == "sum" and scores.shape == (1,) and torch.isfinite(scores).all()


def test_weight_ema_is_the_hand_computed_average_and_swaps_in_place():
    layer = torch.nn.Linear(2, 1)
    layer.bias.requires_grad_(False)  # only trainable weights are averaged
    ema, d = WeightEMA(layer, decay=0.9), 0.9
    seen = [torch.tensor([[1.0, -2.0]]), torch.tensor([[3.0, 0.0]]), torch.tensor([[-1.0, 5.0]])]
    for w in seen:
        with torch.no_grad():
            layer.weight.copy_(w)
        ema.update()
    expected = d * (d * seen[0] + (1 - d) * seen[1]) + (1 - d) * seen[2]  # the first update copies
    assert ema.updates == 3 and len(ema.average) == 1
    torch.testing.assert_close(ema.average[0], expected)
    ema.swap()
    torch.testing.assert_close(layer.weight.detach(), expected)
    torch.testing.assert_close(ema.average[0], seen[2])
    ema.swap()
    torch.testing.assert_close(layer.weight.detach(), seen[2])


def test_training_dropout_acts_only_in_train_mode_and_is_removed_without_a_trace():
    from transformers import LlamaConfig, LlamaForSequenceClassification

    config = LlamaConfig(
        vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(config)
    ids = torch.randint(1, 32, (3, 7))

    def out(train: bool) -> torch.Tensor:
        model.train(train)
        with torch.no_grad():
            return model(input_ids=ids).logits

    clean = out(False)
    remove = add_training_dropout(model, 0.5)
    assert all(layer.self_attn.attention_dropout == 0.5 for layer in model.model.layers)
    torch.testing.assert_close(out(False), clean)  # eval: no dropout
    assert not torch.allclose(out(True), clean)  # train: dropout on
    remove()
    torch.testing.assert_close(out(True), clean)  # gone, even in train mode
    assert all(layer.self_attn.attention_dropout == 0.0 for layer in model.model.layers)
    assert model.config.attention_dropout == 0.0  # nothing of it is saved with the model
