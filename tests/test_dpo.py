"""The DPO stage: sequence log-probs packed or padded, the reference (cached, LoRA-disabled, none for
SimPO), every loss training the policy, online rounds resuming after a kill, the checks, and eval
comparing every policy it is given."""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlhf_lab.artifacts import read_manifest, scratch_dir
from rlhf_lab.config import ConfigError, DPOConfig, validate
from rlhf_lab.data.formats import PreferencePair, read_examples
from rlhf_lab.models import folder_settings, load_causal_lm, load_tokenizer
from rlhf_lab.pipeline import artifact_dir, check, ensure
from rlhf_lab.policy import Reference
from rlhf_lab.stages.dpo.loss import preference_loss
from rlhf_lab.stages.dpo.module import DPOModule
from rlhf_lab.stages.dpo.pairs import PairSet, all_logps, pair_logps, split_pairs, tokenize_pairs
from rlhf_lab.stages.dpo.sources import ROUNDS
from rlhf_lab.stages.dpo.stage import CHECKPOINT
from rlhf_lab.tensors import IGNORE
from tests.helpers import (
    DEBUG,
    SMALL,
    compose_config,
    finish,
    policy_weights,
    saved_weights,
    start,
    tiny_llama,
)

# DPO on the debug world's collected pairs at the preset's sizes: a few steps, evaluated on a few
# held-out prompts
DPO_FAST = [*SMALL, "stage=dpo"]
ONLINE = ["dpo.rounds=2", "collect.num_prompts=24"]  # two rounds of 12 prompts x 3 samples


def handmade_pairs() -> PairSet:
    """Three pairs of different lengths, in the tiny Llama's vocabulary (1 = BOS, 2 = EOS)."""
    return PairSet(
        prompts=[[1, 5, 6], [1, 7], [1, 8, 9, 10, 11]],
        chosen=[[12, 13, 2], [14, 2], [15, 16, 17, 18, 2]],
        rejected=[[19, 2], [20, 21, 22, 23, 24, 2], [25, 26, 2]],
        gold_chosen=torch.tensor([0.5, 0.1, float("nan")]),
        gold_rejected=torch.tensor([-0.5, 0.0, float("nan")]),
    )


def padded_logps(model, prompts: list[list[int]], completions: list[list[int]]) -> torch.Tensor:
    """Σ log π(completion | prompt) from one right-padded batch and the plain HF forward: the reference
    implementation the packed pass must equal."""
    rows = [p + c for p, c in zip(prompts, completions, strict=True)]
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])  # (B, L)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])  # (B, L)
    labels = torch.tensor(
        [
            [IGNORE] * len(p) + c + [IGNORE] * (width - len(p) - len(c))
            for p, c in zip(prompts, completions, strict=True)
        ]
    )  # (B, L)
    logp = model(input_ids=ids, attention_mask=mask).logits.float().log_softmax(-1)[:, :-1]  # (B, L-1, V)
    target = labels[:, 1:]  # (B, L-1)
    picked = logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (B, L-1)
    return torch.where(target != IGNORE, picked, 0.0).sum(-1)  # (B,)


def test_sequence_logps_and_the_loss_are_the_same_packed_or_padded():
    model, pairs = tiny_llama(), handmade_pairs()
    shapes = []  # of every decoder pass: the last is the pairs' own (earlier ones: one-time probes)
    hook = model.base_model.register_forward_hook(
        lambda m, args, kwargs, out: shapes.append(kwargs["input_ids"].shape), with_kwargs=True
    )
    with torch.no_grad():
        packed = pair_logps(model, pairs, pad_token_id=0)
    hook.remove()
    rows, sequences = shapes[-1][0], 2 * len(pairs)
    assert rows < sequences, "the chosen and rejected sequences were not packed into fewer rows"
    with torch.no_grad():
        chosen = padded_logps(model, pairs.prompts, pairs.chosen)
        rejected = padded_logps(model, pairs.prompts, pairs.rejected)
    torch.testing.assert_close(packed.chosen, chosen, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed.rejected, rejected, atol=1e-5, rtol=1e-5)
    assert packed.chosen_lengths.tolist() == [3, 2, 5] and packed.rejected_lengths.tolist() == [2, 6, 3]

    for loss in ("dpo", "cdpo", "ipo", "simpo"):
        settings = DPOConfig(loss=loss)
        refs = PairSet(**{**pairs.__dict__, "ref_chosen": chosen - 0.3, "ref_rejected": rejected + 0.2})
        padded = type(packed)(chosen, rejected, packed.chosen_lengths, packed.rejected_lengths)
        a = preference_loss(settings, settings.resolved_beta(), packed, refs)[0]
        b = preference_loss(settings, settings.resolved_beta(), padded, refs)[0]
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_adapter_disabled_reference_equals_the_base_model():
    from peft import LoraConfig, get_peft_model

    base = tiny_llama()
    original = copy.deepcopy(base)
    policy = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_alpha=8))
    for name, param in policy.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)  # the adapter now changes the model
    pairs, reference = handmade_pairs(), Reference(policy)
    assert reference.copy is None, "a LoRA policy needs no second model"
    ref = all_logps(policy, pairs, 0, budget=16, reference=reference)
    base_logps = all_logps(original, pairs, 0, budget=16)
    torch.testing.assert_close(ref.chosen, base_logps.chosen, atol=1e-5, rtol=0)
    torch.testing.assert_close(ref.rejected, base_logps.rejected, atol=1e-5, rtol=0)
    assert not torch.allclose(ref.chosen, all_logps(policy, pairs, 0, budget=16).chosen, atol=1e-3)


def test_pairs_end_in_eos_fit_max_length_and_split_by_prompt(world, make_cfg):
    cfg, w = world
    tokenizer = load_tokenizer(w.init_model, cfg.model)
    long = "good " * 200
    pairs = [PreferencePair(f"prompt {i // 3}", f"yes {i}", long if i == 0 else f"no {i}") for i in range(30)]
    tokenized = tokenize_pairs(pairs, tokenizer, cfg.data)
    assert all(c[-1] == tokenizer.eos_token_id for c in tokenized.chosen + tokenized.rejected)
    assert len(tokenized.prompts[0]) + len(tokenized.rejected[0]) == cfg.data.max_length
    train, val = split_pairs(pairs, val_size=64, seed=0)
    assert len(train) + len(val) == 30 and len(val) == 3  # a tenth of the 10 prompts, whole
    assert not {p.prompt for p in train} & {p.prompt for p in val}


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["dpo.loss=kto"], "dpo.loss"),
        (["dpo.beta=0"], "dpo.beta"),
        (["dpo.epsilon=0.5"], "dpo.epsilon"),
        (["dpo.rounds=2", "data.preferences.path=prefs.jsonl"], "data.preferences.path"),
        (["dpo.rounds=2", "dpo.judge=rm", "objective=gold"], "dpo.judge"),
        (["dpo.rounds=2", "gold=null"], "labeler.kind"),
        (["dpo.rounds=400", "dpo.max_steps=300"], "dpo.rounds"),
        (["trainer=ddp"], "trainer.strategy"),
        (["eval.policies=[rl,ppo]"], "eval.policies"),
    ],
)
def test_bad_dpo_configs_name_the_key(overrides, key, make_cfg):
    stage = "stage=eval" if overrides[0].startswith("eval.") else "stage=dpo"
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        cfg = make_cfg(stage, *overrides)
        check(cfg, cfg.stage)


# ------------------------------------------------------------------------------- the stage (slow)
def trained(cfg, tmp_path):
    out = ensure(cfg, "dpo", tmp_path)
    return out, read_manifest(out)["metrics"], [json.loads(line) for line in open(out / "eval.jsonl")]


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["dpo", "cdpo", "ipo", "simpo", "lora"])
def test_every_loss_trains_the_policy_and_logs_its_metrics(variant, make_cfg, tmp_path):
    extra = ["peft=lora", "peft.save=adapter"] if variant == "lora" else [f"dpo.loss={variant}"]
    cfg = make_cfg(*DPO_FAST, *extra)
    out, metrics, evals = trained(cfg, tmp_path)
    sft = read_manifest(out)["inputs"]["sft"]
    before, after = policy_weights(sft), policy_weights(out)
    assert any(not torch.equal(before[k], after[k]) for k in before), "the policy did not change"
    assert [e["step"] for e in evals] == [0, 2, 4]
    assert evals[0]["win_rate"] == 0.5 and evals[0]["val_loss"] > 0
    for key in (
        "train/loss",
        "train/accuracy",
        "train/margin",
        "train/chosen_logps",
        "val/accuracy",
        "eval/gold",
    ):
        assert f"dpo/{key}" in metrics, key
    assert metrics["dpo/data/pairs"] > 0 and metrics["dpo/data/val_pairs"] > 0
    references = sorted(p.name for p in out.glob("reference*.safetensors"))
    if variant == "simpo":  # no reference at all: no pass, no file, no KL to measure against
        assert references == [] and "kl" not in evals[-1]
    else:
        assert references == ["reference.safetensors", "reference.val.safetensors"]
        assert evals[0]["kl"] == pytest.approx(0.0, abs=1e-5) and evals[-1]["kl"] > 0
    assert not (out / "checkpoints").exists(), "a finished artifact keeps no resume state"


@pytest.mark.slow
def test_the_cached_reference_equals_a_fresh_pass(make_cfg, tmp_path):
    cfg = make_cfg(*DPO_FAST)
    out = ensure(cfg, "dpo", tmp_path)
    inputs = read_manifest(out)["inputs"]
    tokenizer = load_tokenizer(inputs["sft"], folder_settings(cfg.model))
    sft = load_causal_lm(inputs["sft"], folder_settings(cfg.model), tokenizer)
    pairs, _ = read_examples(
        cfg.data.preferences, f"{inputs['collect']}/preferences.jsonl", tokenizer, "error"
    )
    train, val = split_pairs(pairs, cfg.data.val_size, cfg.seed)
    for name, split in (("reference", train), ("reference.val", val)):
        cached = load_file(str(out / f"{name}.safetensors"))
        fresh = all_logps(sft, tokenize_pairs(split, tokenizer, cfg.data), tokenizer.pad_token_id, budget=256)
        torch.testing.assert_close(cached["chosen"], fresh.chosen, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(cached["rejected"], fresh.rejected, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("crash_at", [2, 3], ids=["while-sampling-round-1", "inside-round-1"])
def test_online_dpo_resumes_after_a_kill_to_the_same_weights(crash_at, make_cfg, tmp_path, monkeypatch):
    cfg = make_cfg(*DPO_FAST, *ONLINE, "dpo.checkpoint_every=100")  # checkpoints at round ends only
    uninterrupted = ensure(cfg, "dpo", tmp_path / "a", rebuild=True)
    weights, evals = policy_weights(uninterrupted), (uninterrupted / "eval.jsonl").read_text()
    rounds = {p.name: p.read_bytes() for p in (uninterrupted / ROUNDS).glob("*.jsonl")}
    assert sorted(rounds) == ["round_000.jsonl", "round_001.jsonl"]

    original = DPOModule.training_step

    def crash(self, step, batch_idx):
        if self.step_count == crash_at:  # round 0 is steps 0-1; its end was checkpointed at step 2
            raise RuntimeError("simulated crash")
        return original(self, step, batch_idx)

    monkeypatch.setattr(DPOModule, "training_step", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        ensure(cfg, "dpo", tmp_path / "b", rebuild=True)
    scratch = artifact_dir(cfg, "dpo").parent / f".{artifact_dir(cfg, 'dpo').name}.partial"
    assert (scratch / CHECKPOINT).is_file()
    assert (scratch / ROUNDS / "round_001.jsonl").is_file() == (crash_at == 3)
    steps_run = []

    def count(self, step, batch_idx):
        steps_run.append(self.step_count)
        return original(self, step, batch_idx)

    monkeypatch.setattr(DPOModule, "training_step", count)
    resumed = ensure(cfg, "dpo", tmp_path / "c", rebuild=True)
    assert steps_run == [2, 3], "the resumed run did not start at the checkpointed step"
    after = policy_weights(resumed)
    assert all(torch.equal(weights[k], after[k]) for k in weights)
    assert (resumed / "eval.jsonl").read_text() == evals, "evaluations lost, repeated or changed"
    assert {p.name: p.read_bytes() for p in (resumed / ROUNDS).glob("*.jsonl")} == rounds


@pytest.mark.slow
def test_online_dpo_killed_in_its_second_round_resumes_to_an_uninterrupted_runs_weights(tmp_path):
    """SIGKILL the command inside round 1 (its round-0 checkpoint written, no other), run it again: it
    resumes at the round and step of that checkpoint, and its weights and evaluations equal an
    uninterrupted run's, bitwise."""
    home = Path(os.environ["RLHF_LAB_HOME"])  # the session's lab: its fast SFT is reused
    args = [DEBUG, *DPO_FAST, *ONLINE, "dpo.max_steps=6", "dpo.eval_every=1", "dpo.checkpoint_every=1000"]
    artifact = artifact_dir(validate(compose_config(*args, fast=False)), "dpo")
    evals = scratch_dir(artifact) / "eval.jsonl"
    job = start(*args, home=home, cwd=tmp_path)
    deadline = time.time() + 900
    while not (evals.is_file() and len(evals.read_text().splitlines()) >= 5):  # steps 0..4: inside round 1
        assert job.poll() is None and time.time() < deadline, "the run ended before its second round"
        time.sleep(0.05)
    job.kill()
    finish(job)
    assert (scratch_dir(artifact) / CHECKPOINT).is_file()

    code, output = finish(start(*args, home=home, cwd=tmp_path))  # the same command again
    assert code == 0 and "dpo: resuming from" in output, output[-3000:]
    resumed, resumed_evals = saved_weights(artifact), (artifact / "eval.jsonl").read_text()
    assert [json.loads(line)["step"] for line in resumed_evals.splitlines()] == list(range(7))

    code, output = finish(start(*args, "cache=false", "resume=never", home=home, cwd=tmp_path))
    assert code == 0 and "resuming" not in output, output[-3000:]
    uninterrupted = saved_weights(artifact)
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted)
    assert resumed_evals == (artifact / "eval.jsonl").read_text()


@pytest.mark.slow
def test_eval_compares_sft_rl_dpo_and_best_of_n_in_one_table(make_cfg, tmp_path):
    from rlhf_lab.api import run

    cfg = make_cfg(
        "experiment=dpo",
        *SMALL,
        "pipeline=[pretrain,sft,collect,reward,rl,bon,dpo,eval]",
        "eval.policies=[rl,dpo]",
        "eval.bon=true",
        "eval.proxy=true",
    )
    record = run(cfg, tmp_path)
    rows = json.loads((Path(record["artifacts"]["eval"]) / "summary.json").read_text())
    names = [r["policy"] for r in rows]
    assert names[:3] == ["sft", "rl (ppo, β=0.05)", "dpo (dpo, β=0.1)"] and "best-of-4" in names
    assert all({"gold", "reward", "kl", "win_rate", "ppl"} <= set(r) for r in rows[:3])
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-6) and rows[2]["kl"] > 0
    assert {"eval/dpo/gold", "eval/rl/gold", "eval/bon_n4/gold"} <= set(record["metrics"])


@pytest.mark.slow
def test_eval_of_experiment_dpo_needs_no_reward_model(make_cfg, tmp_path):
    from rlhf_lab.api import run

    cfg = make_cfg("experiment=dpo", *SMALL)
    record = run(cfg, tmp_path)
    assert set(record["artifacts"]) == {"pretrain", "sft", "collect", "dpo", "eval"}
    rows = json.loads((Path(record["artifacts"]["eval"]) / "summary.json").read_text())
    assert [r["policy"] for r in rows] == ["sft", "dpo (dpo, β=0.1)"] and "reward" not in rows[1]


@pytest.mark.slow
def test_online_dpo_with_the_reward_model_as_judge(make_cfg, tmp_path):
    cfg = make_cfg(*DPO_FAST, *ONLINE, "dpo.judge=rm", "objective=rm")
    out, metrics, _ = trained(cfg, tmp_path)
    assert "reward" in read_manifest(out)["inputs"], "the judge is the reward stage's model"
    rows = [json.loads(line) for line in (out / ROUNDS / "round_001.jsonl").read_text().splitlines()]
    assert rows and all(r["labeler"] == "rm" and r["judge_chosen"] > r["judge_rejected"] for r in rows)
    assert all(r["gold_chosen"] is not None for r in rows), "the rows keep the gold scores"
    assert metrics["dpo/data/pairs"] > 0


@pytest.mark.slow
def test_a_larger_beta_keeps_the_policy_nearer_the_reference(make_cfg, tmp_path):
    def final_kl(beta: float) -> float:
        cfg = make_cfg(*DPO_FAST, f"dpo.beta={beta}", "dpo.max_steps=12", "dpo.eval_every=12")
        return trained(cfg, tmp_path)[1]["dpo/eval/kl"]

    free, held = final_kl(0.01), final_kl(10.0)
    assert held < free / 2, (held, free)  # the tiny world: 2.9 nats at β 1, 14.6 at β 0.03 (docs/results.md)
