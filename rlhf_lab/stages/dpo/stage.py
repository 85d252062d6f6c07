"""Stage `dpo`: the policy trained directly on preference pairs — DPO, conservative DPO, IPO, SimPO —
offline on the collect artifact or any preference dataset, or online over rounds (`dpo.sources`).

Starts from the SFT artifact (or `dpo.policy`), full or LoRA (`peft=`). The reference is the starting
policy: its log-probs of every pair are computed once, in one no-grad pass, by a frozen copy or, with
LoRA, by the same model with its adapter disabled (no second copy), and kept with the run; SimPO has no
reference at all. Checkpoints (every `dpo.checkpoint_every` steps and at each round's end) live in the
artifact's scratch folder: the same command resumes a killed run at its round and step, to the same
weights.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path

from rlhf_lab.config import Config
from rlhf_lab.data.formats import read_examples
from rlhf_lab.evaluation import clear_evals
from rlhf_lab.models import apply_peft, export_model, folder_settings, load_causal_lm, load_tokenizer
from rlhf_lab.policy import Reference
from rlhf_lab.scorers import (
    gold_key,
    needs_reward_stage,
    objective_key,
    objective_scorer,
    trains_reward_models,
)
from rlhf_lab.seeds import stage_seed, without_seed
from rlhf_lab.stages.common import (
    CHECKPOINTS,
    Context,
    comparisons_key,
    data_key,
    fit_steps,
    model_key,
    trainer_key,
)
from rlhf_lab.stages.contract import Derived, Stage, objective_members
from rlhf_lab.stages.dpo.module import DPOModule
from rlhf_lab.stages.dpo.pairs import all_logps, split_pairs, tokenize_pairs
from rlhf_lab.stages.dpo.sources import ROUNDS, Offline, Online, PairSource

log = logging.getLogger("rlhf_lab.stages.dpo")
CHECKPOINT = Path(CHECKPOINTS) / "last.ckpt"
# dpo settings that do not change the artifact (micro-batches change only the order of float sums)
NOT_IN_KEY = ("checkpoint_every", "micro_batch_tokens", "val_every", "val_batches")


def online(cfg: Config) -> bool:
    return cfg.dpo.rounds > 1


def uses_reward_model(cfg: Config) -> bool:
    """Whether the run scores with the objective's reward model: as the online judge, or as the proxy."""
    return cfg.dpo.proxy or (online(cfg) and cfg.dpo.judge == "rm")


def scores_proxy(cfg: Config) -> bool:
    """Whether held-out samples get a proxy score: dpo.proxy, or an objective that trains no reward model
    (gold, length, keyword, a reward model at objective.path, an ensemble of folders), or one the online
    judge builds anyway."""
    return not trains_reward_models(cfg) or uses_reward_model(cfg)


def upstream(cfg: Config) -> list[str]:
    needs = [] if cfg.dpo.policy else ["sft"]
    if not online(cfg) and not cfg.data.preferences.path:
        needs.append("collect")
    if uses_reward_model(cfg) and needs_reward_stage(cfg):
        needs.append("reward")
    return needs


def derived(cfg: Config) -> dict[str, Derived]:
    """An ensemble objective's members, when the run scores with the objective's reward models."""
    return objective_members(cfg) if uses_reward_model(cfg) else {}


def check(cfg: Config) -> Iterator[str]:
    """'key: message' for each setting this stage cannot run with (before anything is built)."""
    t, dpo = cfg.trainer, cfg.dpo
    if t.strategy != "auto" or str(t.devices) != "1" or t.num_nodes != 1:
        yield (
            f"trainer.strategy: stage dpo trains on one device for now, got strategy={t.strategy} "
            f"devices={t.devices} num_nodes={t.num_nodes}; use trainer=cpu or trainer=gpu"
        )
    if dpo.rounds > dpo.max_steps:
        yield f"dpo.rounds: {dpo.rounds} rounds need at least as many steps, dpo.max_steps={dpo.max_steps}"
    if not online(cfg):
        return
    if cfg.data.preferences.path:
        yield "data.preferences.path: online DPO (dpo.rounds >= 2) samples its own pairs, it reads none"
    if dpo.rounds > cfg.collect.num_prompts:
        yield (
            f"dpo.rounds: {dpo.rounds} rounds need at least as many prompts, "
            f"collect.num_prompts={cfg.collect.num_prompts}"
        )
    if dpo.judge == "rm" and cfg.objective.kind != "rm":
        yield f"dpo.judge: judge=rm labels with the objective's reward model, objective={cfg.objective.kind}"
    if dpo.judge == "labeler" and cfg.labeler.kind != "file" and cfg.gold is None:
        yield f"labeler.kind: labeler={cfg.labeler.kind} simulates labels from the gold score, but gold=null"


def key_config(cfg: Config) -> dict:
    return {
        "policy": cfg.dpo.policy,
        "model": model_key(cfg),
        "dpo": {k: v for k, v in without_seed(cfg.dpo).items() if k not in NOT_IN_KEY},
        "preferences": None if online(cfg) else data_key(cfg, "preferences"),
        "online": comparisons_key(cfg) if online(cfg) else None,
        "objective": objective_key(cfg) if scores_proxy(cfg) else None,
        "gold": gold_key(cfg),
        "peft": dataclasses.asdict(cfg.peft),
        "eval_prompts": data_key(cfg, "eval_prompts"),
        "seed": stage_seed(cfg, "dpo"),
        "trainer": trainer_key(cfg),
    }


def pair_source(ctx: Context, out: Path, policy, tokenizer, reference: Reference | None) -> PairSource:
    """Online rounds, or the offline pairs split by prompt; with the reference pass each set gets."""
    cfg, pad = ctx.cfg, tokenizer.pad_token_id
    budget = cfg.dpo.micro_batch_tokens or 4096  # a training pass's size, without gradients

    def reference_pass(pairs):
        return all_logps(policy, pairs, pad, budget, reference)[:2]  # (N,) chosen, (N,) rejected

    ref = None if reference is None else reference_pass
    if online(cfg):
        prompts = ctx.prompts(cfg.data.prompts, "prompts", cfg.collect.num_prompts)
        judge = objective_scorer(cfg, ctx.inputs, ctx.device) if cfg.dpo.judge == "rm" else None
        return Online(cfg, prompts, tokenizer, out / ROUNDS, ref, judge)
    collected = ctx.inputs.get("collect")
    default = collected / "preferences.jsonl" if collected else None
    pairs, name = read_examples(cfg.data.preferences, default, tokenizer, cfg.data.on_bad_row)
    train, val = split_pairs(pairs, cfg.data.val_size, stage_seed(cfg, "dpo"))
    log.info("%s: %d training and %d held-out pairs", name, len(train), len(val))
    return Offline(
        tokenize_pairs(train, tokenizer, cfg.data, name),
        tokenize_pairs(val, tokenizer, cfg.data, f"{name}, held out"),
        ref,
        out,
        cfg.dpo.max_steps,
    )


def build(ctx: Context, out: Path) -> dict[str, float]:
    cfg, log_dir = ctx.cfg, ctx.log_dir("dpo")
    log_dir.mkdir(parents=True, exist_ok=True)
    start, settings = cfg.dpo.policy or ctx.inputs["sft"], folder_settings(cfg.model)
    tokenizer = load_tokenizer(start, settings)
    policy = apply_peft(load_causal_lm(start, settings, tokenizer), cfg.peft)
    reference = None if cfg.dpo.loss == "simpo" else Reference(policy)  # SimPO: no reference at all
    source = pair_source(ctx, out, policy, tokenizer, reference)
    scorer = objective_scorer(cfg, ctx.inputs, ctx.device) if scores_proxy(cfg) else None
    eval_prompts = ctx.prompts(cfg.data.eval_prompts, "eval_prompts", cfg.dpo.eval_prompts)
    checkpoint = (ctx.checkpoint_dir or out) / CHECKPOINT
    module = DPOModule(policy, tokenizer, cfg, source, reference, eval_prompts, scorer, out, checkpoint)
    resume = cfg.resume == "auto" and checkpoint.is_file()
    if resume:
        log.info("dpo: resuming from %s", checkpoint)
    else:  # a scratch folder left by a run killed before its first checkpoint
        clear_evals(out)
    fit_steps(module, cfg, "dpo", cfg.dpo.max_steps, checkpoint, resume, log_dir)
    export_model(module.policy, tokenizer, out, cfg.peft)
    return module.metrics.final() | {f"dpo/data/{k}": v for k, v in source.pair_counts().items()}


STAGE = Stage(
    "dpo",
    version=2,
    upstream=upstream,
    key_config=key_config,
    build=build,
    check=check,
    derived=derived,
    resumable=True,
)
