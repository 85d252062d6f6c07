"""Stage `rl`: build the policy, the reference and the value function, train, export.

The reference is a frozen copy of the starting policy, or, for a LoRA policy, the same model with its
adapter disabled (no second copy). The prompt stream is a function of (seed, step), so a checkpoint
holds everything needed to resume exactly: weights, optimizer, scheduler, β, baseline, RNG states and
the step. Checkpoints live in the artifact's scratch folder: running the same command again after a
crash or a SIGTERM resumes from the last one.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path

from rlhf_lab.config import Config, PeftConfig
from rlhf_lab.evaluation import clear_evals
from rlhf_lab.models import (
    apply_peft,
    export_model,
    folder_settings,
    load_causal_lm,
    load_reward_model,
    load_tokenizer,
)
from rlhf_lab.scorers import gold_key, needs_reward_stage, objective_key, reward_model_path
from rlhf_lab.seeds import stage_seed, without_seed
from rlhf_lab.stages.common import (
    CHECKPOINTS,
    Context,
    check_ranks_agree,
    data_key,
    fit_steps,
    model_key,
    trainer_key,
)
from rlhf_lab.stages.contract import Stage, objective_members
from rlhf_lab.stages.rl.algorithms import problems
from rlhf_lab.stages.rl.module import RLModule

log = logging.getLogger(__name__)
CHECKPOINT = Path(CHECKPOINTS) / "last.ckpt"
# rl settings that do not change the artifact (micro-batches change only the order of float sums)
NOT_IN_KEY = ("samples_every", "checkpoint_every", "micro_batch_tokens")
# settings added after artifacts were built: at these values they compute what those artifacts did, so
# they stay out of the key there and the artifacts keep their keys (algo.off_policy: without a correction)
ADDED_ALGO_SETTINGS = {"clip_high": None, "dropout": 0.0, "tau_pos": 1.0, "tau_neg": 1.05}
ADDED_RL_SETTINGS = {"staleness": 0}


def upstream(cfg: Config) -> list[str]:
    return ([] if cfg.rl.policy else ["sft"]) + (["reward"] if needs_reward_stage(cfg) else [])


def check(cfg: Config) -> Iterator[str]:
    """'key: message' for each setting this stage cannot run with (before anything is built)."""
    yield from problems(cfg.algo, cfg.rl.rollouts_per_step)


def key_config(cfg: Config) -> dict:
    return {
        "policy": cfg.rl.policy,
        "model": model_key(cfg),
        "algo": algo_key(cfg),
        "rl": rl_key(cfg),
        "objective": objective_key(cfg),
        "gold": gold_key(cfg),
        "peft": dataclasses.asdict(rl_peft(cfg)),  # rl.peft, keyed here
        "prompts": data_key(cfg, "prompts"),
        "eval_prompts": data_key(cfg, "eval_prompts"),
        "seed": stage_seed(cfg, "rl"),
        "trainer": trainer_key(cfg),
    }


def rl_key(cfg: Config) -> dict:
    """The rl settings in the key: not `NOT_IN_KEY` nor rl.peft (keyed apart), `ADDED_RL_SETTINGS` only
    away from their old values."""
    settings = {k: v for k, v in without_seed(cfg.rl).items() if k not in (*NOT_IN_KEY, "peft")}
    return {k: v for k, v in settings.items() if ADDED_RL_SETTINGS.get(k, ...) != v}


def rl_peft(cfg: Config) -> PeftConfig:
    """The adapter settings of the RL policy: rl.peft when it names a method, else the peft group's (which
    SFT and the reward model also train with)."""
    return cfg.rl.peft if cfg.rl.peft.method != "none" else cfg.peft


def algo_key(cfg: Config) -> dict:
    """The algo settings in the key: `ADDED_ALGO_SETTINGS` only away from their old values, and
    truncate_logprobs only where rl.sampling truncates (top-k or top-p: before the setting existed such
    runs used the untruncated log-probs, so they must not be reused for its default, true)."""
    algo = dataclasses.asdict(cfg.algo)
    for name, old in ADDED_ALGO_SETTINGS.items():
        if algo[name] == old:
            del algo[name]
    if cfg.algo.off_policy.correction == "none":  # no weights: any of its other settings computes the same
        del algo["off_policy"]
    if cfg.rl.sampling.top_k == 0 and cfg.rl.sampling.top_p == 1.0:
        del algo["truncate_logprobs"]
    return algo


def build(ctx: Context, out: Path) -> dict[str, float]:
    cfg, log_dir = ctx.cfg, ctx.log_dir("rl")
    log_dir.mkdir(parents=True, exist_ok=True)
    start, settings = cfg.rl.policy or ctx.inputs["sft"], folder_settings(cfg.model)
    tokenizer = load_tokenizer(start, settings)
    policy = apply_peft(load_causal_lm(start, settings, tokenizer), rl_peft(cfg))
    critic = None
    if cfg.algo.value.model == "critic":  # the value model starts as the reward model (Stiennon 2020)
        reward = reward_model_path(cfg, ctx.inputs)
        critic = load_reward_model(reward, settings, load_tokenizer(reward, settings), new_head=False)
    checkpoint = (ctx.checkpoint_dir or out) / CHECKPOINT  # rank 0's scratch folder, also for other ranks
    prompts = ctx.prompts(cfg.data.prompts, "prompts")
    eval_prompts = ctx.prompts(cfg.data.eval_prompts, "eval_prompts", cfg.rl.eval_prompts)
    module = RLModule(policy, tokenizer, cfg, prompts, eval_prompts, ctx.inputs, critic, out, checkpoint)
    resume = cfg.resume == "auto" and checkpoint.is_file()
    if resume:
        log.info("rl: resuming from %s", checkpoint)
    else:  # a scratch folder left by a run killed before its first checkpoint
        clear_evals(out)
    trainer = fit_steps(module, cfg, "rl", cfg.rl.max_steps, checkpoint, resume, log_dir)
    check_ranks_agree(trainer, module)
    return export(module, tokenizer, out, cfg)


def export(module: RLModule, tokenizer, out: Path, cfg: Config) -> dict[str, float]:
    """The final policy as an HF folder (merged or adapter), the value function beside it, and metrics."""
    if not module.trainer.is_global_zero:
        return {}
    export_model(module.policy, tokenizer, out, rl_peft(cfg))
    if module.value_head is not None:
        from safetensors.torch import save_file

        (out / "value").mkdir(exist_ok=True)
        state = {k: v.contiguous() for k, v in module.value_head.state_dict().items()}
        save_file(state, out / "value" / "head.safetensors")
    if module.critic is not None:
        module.critic.save_pretrained(out / "value", safe_serialization=True)
    return module.metrics.final()


STAGE = Stage(
    "rl",
    version=2,
    upstream=upstream,
    key_config=key_config,
    build=build,
    check=check,
    derived=objective_members,
    distributed=True,
    resumable=True,
)
