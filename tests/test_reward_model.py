"""Stage `reward`: a Bradley–Terry reward model on the collected pairs: its validation metrics, export,
normalization and scoring, the summed head, LoRA, training-only dropout and the weight average."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from rlhf_lab.artifacts import read_manifest
from rlhf_lab.pipeline import ensure
from rlhf_lab.scorers import RewardModelScorer
from rlhf_lab.stages.reward import (
    WeightEMA,
    add_training_dropout,
    calibration_error,
    pairwise_metrics,
)
from tests.helpers import SMALL, held_out_metrics


@pytest.mark.slow
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
    metrics = read_manifest(rm_dir)["metrics"]  # the final validation's: the exported model on held-out pairs
    expected = held_out_metrics(cfg, rm_dir)
    for key in ("accuracy", "gold_accuracy", "bt_ceiling", "gold_label_accuracy", "ece"):
        assert metrics[f"reward/val/{key}"] == pytest.approx(expected[key], abs=1e-6), key


def test_reward_inputs_mark_the_completion_and_its_eos(world):
    from rlhf_lab.data.reward_inputs import reward_inputs
    from rlhf_lab.models import load_tokenizer

    cfg, built = world
    tokenizer = load_tokenizer(built.init_model, cfg.model)  # the tiny world's, as a reward model's
    prompts, completions = ["The film", "The acting in this long movie was"], [" was great.", " dull."]
    inputs = reward_inputs(tokenizer, prompts, completions, 512)
    for ids, mask, completion, real in zip(
        inputs["input_ids"], inputs["completion_mask"], completions, inputs["attention_mask"], strict=True
    ):
        assert tokenizer.decode(ids[mask]) == completion + tokenizer.eos_token
        assert not (mask & ~real.bool()).any()  # never a pad token
    cut = reward_inputs(tokenizer, ["The acting in this long movie was"], [" dull."], 4)  # prompt cut short
    assert cut["completion_mask"][0].tolist() == [False, False, False, True]  # the EOS is still scored


@pytest.mark.slow
@pytest.mark.parametrize("run", ["reward_run", "sum_reward_run"])
def test_reward_score_ignores_padding_side_and_batch_composition(run, request):
    from rlhf_lab.data.reward_inputs import reward_inputs

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


@pytest.mark.slow
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


@pytest.mark.slow
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
