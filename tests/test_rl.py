"""The RL stage: every algorithm trains, the KL penalty holds, the reference, masking, resume."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlhf_lab.artifacts import read_manifest
from rlhf_lab.config import ConfigError
from rlhf_lab.evaluation import EVAL_HISTORY
from rlhf_lab.losses import gae, kl_penalized_rewards
from rlhf_lab.pipeline import artifact_dir, ensure, stage_key
from rlhf_lab.policy import PromptStream, Reference, micro_batches
from rlhf_lab.rollout import Rollout, generate, response_logprobs
from rlhf_lab.stages.rl.algorithms import ALGORITHMS
from rlhf_lab.stages.rl.experience import Experience, Share
from rlhf_lab.stages.rl.module import RLModule
from rlhf_lab.stages.rl.stage import CHECKPOINT
from rlhf_lab.tensors import left_pad
from tests.helpers import RL_FAST, SMALL, policy_weights, tiny_llama


@pytest.mark.slow
@pytest.mark.parametrize("algo", [*ALGORITHMS, "ppo-critic", "lora", "stale"])
def test_every_algorithm_changes_the_policy_and_logs_its_metrics(algo, make_cfg, tmp_path):
    overrides = {
        "ppo-critic": [*SMALL, "algo=ppo", "objective=rm", "algo.value.model=critic", "algo.epochs=2"],
        "lora": ["algo=rloo", "peft=lora", "peft.save=adapter"],
        "stale": ["algo=ppo", "rl.staleness=1", "algo.off_policy.correction=tis"],
    }.get(algo, [f"algo={algo}"])
    cfg = make_cfg(*RL_FAST, *overrides)
    out = ensure(cfg, "rl", tmp_path)
    sft = read_manifest(out)["inputs"]["sft"]

    before, after = policy_weights(sft), policy_weights(out)
    assert any(not torch.equal(before[k], after[k]) for k in before), "the policy did not change"
    evals = [json.loads(line) for line in open(out / "eval.jsonl")]
    assert [e["step"] for e in evals] == [0, 2]
    assert evals[0]["kl"] == pytest.approx(0.0, abs=1e-5) and evals[0]["win_rate"] == 0.5
    metrics = read_manifest(out)["metrics"]
    for key in ("reward", "gold", "kl", "beta", "entropy", "length", "eos_fraction", "time/generation"):
        assert f"rl/train/{key}" in metrics, key
    if algo == "stale":  # the sampler-learner mismatch and the weights of its correction
        assert {"rl/train/off_policy/kl", "rl/train/off_policy/clipped_share"} <= set(metrics)
        assert metrics["rl/train/off_policy/weight_max"] <= 2.0  # algo.off_policy.cap
    if algo.startswith("ppo"):
        assert {"rl/train/clip_fraction", "rl/train/value_loss", "rl/train/explained_variance"} <= set(
            metrics
        )
    if algo in ALGORITHMS and not ALGORITHMS[algo].on_policy:  # the raw importance ratios
        assert {"rl/train/ratio_mean", "rl/train/ratio_max", "rl/train/clip_fraction"} <= set(metrics)
        assert metrics["rl/train/ratio_max"] >= metrics["rl/train/ratio_mean"] > 0
    for key in ("memory/peak_mb", "memory/weights_mb", "time/total"):
        assert metrics[f"rl/train/{key}"] > 0, key
    if algo == "ppo":
        assert load_file(out / "value" / "head.safetensors")["weight"].shape == (
            1,
            cfg.world.model.hidden_size,
        )
    if algo == "ppo-critic":
        assert (out / "value" / "config.json").is_file()
    if algo == "lora":
        assert (out / "adapter_config.json").is_file()
    assert not (out / "checkpoints").exists(), "a finished artifact keeps no resume state"
    rows = (tmp_path / "rl" / "csv" / "metrics.csv").read_text().splitlines()
    assert "rl/train/reward" in rows[0] and len(rows) >= 3


@pytest.mark.slow
def test_dapo_learns_nothing_from_groups_whose_rewards_are_all_equal(make_cfg, tmp_path):
    all_zero = ["objective=keyword", "objective.keywords=[zzzz]"]  # every completion scores 0
    cfg = make_cfg(*RL_FAST, "algo=dapo", *all_zero, "algo.entropy_coef=0.1")  # the bonus alone would move it
    out = ensure(cfg, "rl", tmp_path)
    before, after = policy_weights(read_manifest(out)["inputs"]["sft"]), policy_weights(out)
    assert all(torch.equal(before[k], after[k]) for k in before), "no update from dropped groups"
    assert read_manifest(out)["metrics"]["rl/train/kept_fraction"] == 0


@pytest.mark.slow
def test_rl_peft_trains_an_adapter_from_the_fully_trained_sft_policy(make_cfg, tmp_path):
    full = make_cfg(*RL_FAST, "algo=rloo")
    lora = make_cfg(*RL_FAST, "algo=rloo", "rl.peft.method=lora", "rl.peft.r=4", "rl.peft.save=adapter")
    assert stage_key(lora, "sft") == stage_key(full, "sft") and stage_key(lora, "rl") != stage_key(full, "rl")
    out = ensure(lora, "rl", tmp_path)
    assert (out / "adapter_config.json").is_file()
    assert read_manifest(out)["inputs"]["sft"] == str(artifact_dir(full, "sft"))
    assert not (Path(read_manifest(out)["inputs"]["sft"]) / "adapter_config.json").exists()
    weights = read_manifest(out)["metrics"]["rl/train/memory/weights_mb"]
    full_weights = read_manifest(ensure(full, "rl", tmp_path))["metrics"]["rl/train/memory/weights_mb"]
    assert weights < full_weights / 2, "no reference copy, optimizer state for the adapter only"


@pytest.mark.slow
def test_a_large_beta_keeps_the_policy_near_the_reference(make_cfg, tmp_path):
    def final_kl(beta: float) -> float:
        cfg = make_cfg(
            *RL_FAST,
            "algo=rloo",
            f"algo.kl.beta={beta}",
            "rl.max_steps=10",
            "rl.lr=1e-3",
            "rl.warmup_steps=4",
        )
        return read_manifest(ensure(cfg, "rl", tmp_path))["metrics"]["rl/eval/kl"]

    free, held = final_kl(0.0), final_kl(20.0)
    assert held < free / 2, (held, free)  # e.g. 0.55 against 1.53 nats (one thread)


@pytest.mark.slow
@pytest.mark.parametrize("staleness", [0, 1])
def test_killed_run_resumes_from_its_checkpoint_to_the_same_policy(
    staleness, make_cfg, tmp_path, monkeypatch
):
    """With rl.staleness=1 the first step after the resume samples with the weights of the step before the
    checkpoint, which the checkpoint holds beside the policy's."""
    cfg = make_cfg(
        *RL_FAST,
        "algo=ppo",
        "rl.max_steps=4",
        "rl.eval_every=1",
        "rl.checkpoint_every=2",
        f"rl.staleness={staleness}",
    )
    uninterrupted = ensure(cfg, "rl", tmp_path / "a", rebuild=True)
    reference, evals = policy_weights(uninterrupted), (uninterrupted / "eval.jsonl").read_text()
    history = (uninterrupted / EVAL_HISTORY).read_text()  # every evaluation's samples

    original = RLModule.training_step

    def crash_in_step_four(self, step, batch_idx):
        if self.step_count == 3:  # steps 1-3 done and evaluated; the last checkpoint is at step 2
            raise RuntimeError("simulated crash")
        return original(self, step, batch_idx)

    monkeypatch.setattr(RLModule, "training_step", crash_in_step_four)
    with pytest.raises(RuntimeError, match="simulated crash"):
        ensure(cfg, "rl", tmp_path / "b", rebuild=True)
    scratch = artifact_dir(cfg, "rl").parent / f".{artifact_dir(cfg, 'rl').name}.partial"
    assert (scratch / CHECKPOINT).is_file()
    monkeypatch.setattr(RLModule, "training_step", original)

    resumed = ensure(cfg, "rl", tmp_path / "c", rebuild=True)
    after = policy_weights(resumed)
    assert all(torch.equal(reference[k], after[k]) for k in reference)
    assert (resumed / "eval.jsonl").read_text() == evals, "evaluations lost, repeated or changed"
    assert (resumed / EVAL_HISTORY).read_text() == history, "samples lost, repeated or changed"


def test_lora_reference_is_the_base_model_without_a_copy():
    from peft import LoraConfig, get_peft_model

    base = tiny_llama()
    original = copy.deepcopy(base)
    policy = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_alpha=8))
    for name, param in policy.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)  # the adapter now changes the model
    ids, mask = left_pad([[1, 5, 6], [1, 7]], pad_token_id=0)
    rollout = generate(policy, ids, mask, max_new_tokens=6, eos_token_id=2, pad_token_id=0)

    reference = Reference(policy)
    assert reference.copy is None
    ref = reference(policy, rollout, 1.0)
    torch.testing.assert_close(ref, response_logprobs(original, rollout), atol=1e-5, rtol=0)
    assert not torch.allclose(ref, response_logprobs(policy, rollout).detach(), atol=1e-3)


def test_full_fine_tuning_reference_is_a_frozen_copy():
    policy = tiny_llama()
    reference = Reference(policy)
    assert reference.copy is not policy
    assert not any(p.requires_grad for p in reference.copy.parameters())


def test_tokens_after_eos_or_a_stop_token_carry_nothing():
    """Junk in the padded part of a batch changes no reward, advantage or return."""
    ids = torch.tensor([[5, 9, 2, 0], [5, 6, 7, 8]])  # row 0 ends in EOS (2), row 1 runs to the limit
    rollout = Rollout(
        prompt_ids=torch.ones(2, 1, dtype=torch.long),
        prompt_mask=torch.ones(2, 1, dtype=torch.long),
        response_ids=ids,
        response_mask=torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]),
        logprobs=torch.randn(2, 4),
        eos_token_id=2,
    )
    cut = rollout.truncate_after(9, pad_token_id=0)  # a stop token at row 0, position 1
    assert cut.response_mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert cut.response_ids[0].tolist() == [5, 9, 0, 0] and cut.logprobs[0, 2:].eq(0).all()

    mask, scores = cut.response_mask, torch.tensor([1.0, -1.0])
    old, ref, values = torch.randn(2, 4), torch.randn(2, 4), torch.randn(2, 4)
    junk = ~mask.bool()
    rewards = kl_penalized_rewards(scores, old, ref, mask, beta=0.1)
    adv, ret = gae(rewards, values, mask)
    rewards2 = kl_penalized_rewards(
        scores, old.masked_fill(junk, 1e4), ref.masked_fill(junk, -1e4), mask, 0.1
    )
    adv2, ret2 = gae(rewards2, values.masked_fill(junk, 1e4), mask)
    torch.testing.assert_close((rewards, adv, ret), (rewards2, adv2, ret2))
    assert rewards[0, 1] == pytest.approx(1.0 - 0.1 * (old[0, 1] - ref[0, 1]).item())  # score at the stop
    assert adv[junk].eq(0).all() and ret[junk].eq(0).all()


@pytest.mark.parametrize("algo", list(ALGORITHMS))
def test_micro_batches_add_up_to_the_minibatch_gradient(algo, make_cfg):
    """Each loss term is a mean over tokens or over sequences; weighted by the micro-batch's share of
    either, the micro-batch gradients sum to the gradient of the whole minibatch."""
    placement = "loss" if algo != "ppo" else "reward"  # the KL term in the loss where it can be
    cfg = make_cfg(
        "stage=rl",
        f"algo={algo}",
        f"algo.kl.placement={placement}",
        "algo.kl.beta=0.3",
        "algo.entropy_coef=0.1",
    )
    module = RLModule(tiny_llama(), None, cfg, [], [], None)
    ids, mask = left_pad([[1, 5, 6], [1, 7], [1, 9, 9, 4], [1, 3]] * 2, pad_token_id=0)
    g = torch.Generator().manual_seed(0)
    rollout = generate(
        module.policy, ids, mask, max_new_tokens=8, eos_token_id=2, pad_token_id=0, generator=g
    )
    n, width = rollout.response_ids.shape
    assert rollout.lengths().unique().numel() > 1, "the test needs ragged responses"
    noise = torch.randn(n, width, generator=g)
    per_token = algo in ("ppo", "reinforce_pp")
    experience = Experience(
        rollout,
        old_logprobs=rollout.logprobs + 0.1 * noise,
        ref_logprobs=rollout.logprobs - 0.2 * noise,
        advantages=torch.randn(n, width, generator=g) if per_token else torch.randn(n, generator=g),
        old_values=torch.randn(n, width, generator=g) if algo == "ppo" else None,
        returns=torch.randn(n, width, generator=g) if algo == "ppo" else None,
        keep=torch.tensor([True, True, False, False, True, True, True, True]) if algo == "dapo" else None,
        max_new_tokens=8,
    )
    params = [p for p in module.parameters() if p.requires_grad]

    def grads(loss):
        return torch.autograd.grad(loss, params, allow_unused=True)

    whole = grads(module.loss(experience)[0])
    lengths = rollout.attention_mask.sum(1)
    parts = micro_batches(lengths, budget=-(-int(lengths.sum()) // 3))
    assert len(parts) == 3 and sorted(torch.cat(parts).tolist()) == list(range(n))
    summed = [torch.zeros_like(p) for p in params]
    response_mask = experience.mask  # the rows the loss trains on
    for index in parts:
        share = Share(tokens=response_mask[index].sum() / response_mask.sum(), rows=len(index) / n)
        for total, part in zip(summed, grads(module.loss(experience.select(index), share)[0]), strict=True):
            total += 0 if part is None else part
    for a, b in zip(whole, summed, strict=True):
        torch.testing.assert_close(torch.zeros_like(b) if a is None else a, b, atol=1e-6, rtol=1e-4)


def test_micro_batches_balance_tokens_and_respect_the_budget():
    lengths = torch.tensor([30, 5, 12, 40, 8, 25, 9, 11])  # 140 tokens
    assert len(micro_batches(lengths, 0)) == 1
    parts = micro_batches(lengths, 50)
    assert len(parts) == 3  # ceil(140 / 50)
    loads = sorted(int(lengths[p].sum()) for p in parts)
    assert loads[-1] - loads[0] <= int(lengths.max()) and sum(loads) == 140
    assert len(micro_batches(lengths, 50, agree=lambda count: count + 2)) == 5  # e.g. another rank's count
    assert len(micro_batches(lengths, 1)) == len(lengths)  # never more groups than rows


def test_prompt_stream_is_a_function_of_the_step():
    stream = PromptStream(num_prompts=10, per_step=4, seed=3)
    assert stream.batch(5) == PromptStream(10, 4, 3).batch(5)
    first_pass = [i for step in range(2) for i in stream.batch(step)] + stream.batch(2)[:2]
    assert sorted(first_pass) == list(range(10)), "each pass visits every prompt once"
    rank0, rank1 = stream.batch(1, rank=0, world_size=2), stream.batch(1, rank=1, world_size=2)
    assert rank0 == stream.batch(2) and rank1 == stream.batch(3)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["algo.kl.beta=-0.1"], "algo.kl.beta"),
        (["algo.clip=0"], "algo.clip"),
        (["rl.sampling.temperature=0"], "rl.sampling.temperature"),
        (["objective=gold", "algo.value.model=critic"], "algo.value.model"),
    ],
)
def test_bad_rl_configs_name_the_key(overrides, key, make_cfg):
    """Validation names these; an algorithm's own requirements: tests/test_rl_algorithms.py."""
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        make_cfg("stage=rl", *overrides)
