"""Stage `reward`: a Bradley–Terry reward model on preference pairs.

Its backbone (`reward_model.backbone`) is the policy's by default (its SFT or pretrained model), or is
chosen apart from the policy: a named size of the tiny world's model, pretrained once per size by the
pretrain stage (a `Derived` input), or any HF causal LM, so that the proxy's size can vary as in
Gao et al. 2022 (3M to 3B proxies) and Stiennon et al. 2020 (accuracy against reward-model size).
The backbone gets a scalar head read at the final token (HF's
`AutoModelForSequenceClassification`, num_labels=1, head init N(0, 1/√(d+1)), Stiennon 2020), and
is trained with the K-wise ranking loss −log σ(r⁺ − r⁻) over all pairs of a prompt (Ouyang 2022).
Afterwards its output is shifted and scaled so the policy's samples score mean 0, std 1 (Ziegler
2019), stored in its config as `reward_mean` / `reward_std` and applied by `RewardModelScorer`.
`reward_model.pool=sum` instead sums the head over the completion's tokens, a per-token reward with
the shape of a lexicon scorer such as VADER; it is stored as `reward_pool` for the scorer.

The labels are noisy by construction (Bradley–Terry draws), and the 2M-parameter tiny Llama starts
fitting that noise after about two epochs. Two standard remedies can be switched on, both for
training only: `reward_model.dropout` on the attention probabilities and the residual branches
(Srivastava 2014; where GPT-2 puts `attn_pdrop` / `resid_pdrop`), and `reward_model.ema_decay`, an
exponential moving average of the weights (Polyak & Juditsky 1992; the rule of
`torch.optim.swa_utils.get_ema_multi_avg_fn`), which is then what is validated and exported. On the
tiny world (dropout 0.1, decay 0.99) they moved held-out accuracy by about a point at most, within
run-to-run noise, so both are off by default.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import torch
from torch import nn

from rlhf_lab.artifacts import read_manifest, worker_rank
from rlhf_lab.config import Config, RewardModelConfig
from rlhf_lab.config.validation import is_folder_or_hub_id
from rlhf_lab.data.formats import read_examples
from rlhf_lab.data.preferences import PreferenceDataModule
from rlhf_lab.faults import FaultGuard
from rlhf_lab.losses import bradley_terry_loss, pairwise_differences
from rlhf_lab.models import (
    add_training_dropout,
    apply_peft,
    export_model,
    load_reward_model,
    load_tokenizer,
    reward_logits,
)
from rlhf_lab.optim import build_optimizer
from rlhf_lab.scorers import RewardModelScorer
from rlhf_lab.seeds import stage_seed, without_seed
from rlhf_lab.stages.common import (
    CHECKPOINTS,
    Context,
    data_key,
    fit,
    gather_cat,
    model_key,
    sized,
    trainer_key,
)
from rlhf_lab.stages.contract import Derived, Stage

log = logging.getLogger(__name__)
GOLD_GAP = 0.5  # "clear" pairs for the gold-agreement metric


def upstream(cfg: Config) -> list[str]:
    needs = [] if cfg.data.preferences.path else ["collect"]
    if cfg.reward_model.backbone == "policy" and (
        cfg.reward_model.init == "sft" or cfg.model.name_or_path is None
    ):
        needs.append(cfg.reward_model.init)
    return needs


def derived(cfg: Config) -> dict[str, Derived]:
    """A named size's backbone: the pretrain artifact of the world's model at that size."""
    size = cfg.reward_model.backbone
    return {"backbone": Derived("pretrain", sized(cfg, size))} if size in cfg.world.sizes else {}


def check(cfg: Config) -> Iterator[str]:
    """'key: message' for a backbone that is neither the policy's, a named size, nor a model."""
    backbone = cfg.reward_model.backbone
    if backbone != "policy" and backbone not in cfg.world.sizes and not is_folder_or_hub_id(backbone):
        yield (
            f"reward_model.backbone: {backbone!r} is neither policy, nor a size of world.sizes "
            f"({', '.join(cfg.world.sizes)}), nor a model folder or hub id"
        )


def train_key(rm: RewardModelConfig) -> dict:
    """reward_model's settings for the key: without its seed, and without the default backbone (policy),
    so that the runs from before the setting existed keep their keys."""
    settings = without_seed(rm)
    if settings["backbone"] == "policy":
        del settings["backbone"]
    return settings


def key_config(cfg: Config) -> dict:
    return {
        "model": model_key(cfg),
        "data": data_key(cfg, "preferences"),
        "peft": dataclasses.asdict(cfg.peft),
        "train": train_key(cfg.reward_model),
        "seed": stage_seed(cfg, "reward"),
        "trainer": trainer_key(cfg),
    }


def pairwise_metrics(
    diff: torch.Tensor, gold_gap: torch.Tensor, temperature: float | None
) -> dict[str, float]:
    """Metrics over labelled pairs: diff = r_chosen − r_rejected (P,), gold_gap = g_chosen − g_rejected (P,).

    accuracy: against the labels; gold_accuracy: against the gold ordering (ties left out), also on
    pairs whose gold gap exceeds GOLD_GAP; bt_ceiling: E[σ(|gap|/T)], the best accuracy any model can
    expect against Bradley–Terry labels of temperature T; gold_label_accuracy: the gold scorer's own
    accuracy against these labels; ece: expected calibration error of σ(diff).
    """
    metrics = {"accuracy": (diff > 0).float().mean().item(), "ece": calibration_error(torch.sigmoid(diff))}
    known = ~torch.isnan(gold_gap) & (gold_gap != 0)
    if known.any():
        agree = (diff[known] > 0) == (gold_gap[known] > 0)
        clear = gold_gap[known].abs() > GOLD_GAP
        metrics["gold_accuracy"] = agree.float().mean().item()
        if clear.any():
            metrics["gold_accuracy_clear"] = agree[clear].float().mean().item()
    scored = gold_gap[~torch.isnan(gold_gap)]
    if scored.numel():  # the gold scorer judged by the same labels: the ceiling as realized on this split
        metrics["gold_label_accuracy"] = ((scored > 0).float() + 0.5 * (scored == 0).float()).mean().item()
        if temperature is not None:
            metrics["bt_ceiling"] = torch.sigmoid(scored.abs() / temperature).mean().item()
    return metrics


def calibration_error(p_chosen: torch.Tensor, bins: int = 10) -> float:
    """ECE of the predicted preference: confidence max(p, 1−p) against being right (p > ½), binned."""
    confidence = torch.maximum(p_chosen, 1 - p_chosen)  # (P,)
    correct = (p_chosen > 0.5).float()  # (P,)
    edges = torch.linspace(0.5, 1.0, bins + 1)
    which = torch.bucketize(confidence, edges[1:-1])  # (P,) bin index
    error = torch.zeros(())
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            error += in_bin.float().mean() * (confidence[in_bin].mean() - correct[in_bin].mean()).abs()
    return error.item()


class WeightEMA:
    """Exponential moving average of a model's trainable weights (Polyak & Juditsky 1992): after each
    update, avg ← decay·avg + (1 − decay)·w, the first update copying w. The same rule as
    `torch.optim.swa_utils.get_ema_multi_avg_fn(decay)`, kept as plain tensors so that it is neither
    trained nor counted as a parameter; `swap` exchanges it with the live weights in place."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay, self.updates = decay, 0
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.average = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        weight = 1.0 if self.updates == 0 else 1 - self.decay
        torch._foreach_lerp_(self.average, [p.detach() for p in self.params], weight)
        self.updates += 1

    @torch.no_grad()
    def swap(self) -> None:
        for p, a in zip(self.params, self.average, strict=True):
            tmp = p.detach().clone()
            p.copy_(a)
            a.copy_(tmp)


class RewardModule(L.LightningModule):
    def __init__(
        self, model, cfg: RewardModelConfig, bt_temperature: float | None, checkpoint_dir: Path | None = None
    ):
        super().__init__()
        self.model, self.cfg, self.bt_temperature = model, cfg, bt_temperature
        self._val: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.ema = WeightEMA(model, cfg.ema_decay) if cfg.ema_decay is not None else None
        self._ema_at = -1  # the global step of the last EMA update
        self._swapped = False
        stop_checkpoint = checkpoint_dir / "nonfinite.ckpt" if checkpoint_dir else None
        self.guard = FaultGuard("reward", cfg.max_nonfinite, stop_checkpoint, section="reward_model")

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        """Average once per optimizer step, from the end of warmup on (the last step at the latest)."""
        step = self.global_step  # optimizer steps taken so far
        start = min(self.cfg.warmup_steps, self.cfg.max_steps - 1)
        if self.ema is not None and step > start and step != self._ema_at:
            self.ema.update()
            self._ema_at = step

    def use_average(self, on: bool) -> None:
        """Put the EMA weights in the model (on) or the raw weights back (off); a no-op without EMA or
        before the first average."""
        if self.ema is not None and self.ema.updates and on != self._swapped:
            self.ema.swap()
            self._swapped = on

    def on_before_optimizer_step(self, optimizer) -> None:
        self.guard.check_grads(self, self.global_step)

    def on_validation_epoch_start(self) -> None:
        self.use_average(True)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.ema is not None:  # the state_dict holds the raw weights; the average rides along
            checkpoint["reward_ema"] = {"average": self.ema.average, "updates": self.ema.updates}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self.ema is not None and "reward_ema" in checkpoint:
            for a, saved in zip(self.ema.average, checkpoint["reward_ema"]["average"], strict=True):
                a.copy_(saved)
            self.ema.updates = checkpoint["reward_ema"]["updates"]

    def rewards(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Rewards laid out as (B, K): one forward pass over every completion of the batch."""
        flat = reward_logits(self.model, batch, self.cfg.pool)  # (N,)
        b, k = batch["gold"].shape
        return flat.new_zeros(b * k).index_copy(0, batch["slot"], flat.float()).view(b, k)  # (B, K)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        rewards = self.rewards(batch)  # (B, K)
        margins = batch["margins"] if self.cfg.use_margin else None
        loss = bradley_terry_loss(pairwise_differences(rewards), margins, batch["prefers"])
        finite = self.guard.check_loss(self, loss, self.global_step)
        self.log("reward/train/skipped_updates", float(self.guard.skipped))
        if not finite:
            return None  # Lightning skips the backward pass and the optimizer step
        diff = pairwise_differences(rewards)[batch["prefers"]]  # (P,)
        self.log_dict(
            {
                "reward/train/loss": loss,
                "reward/train/accuracy": (diff > 0).float().mean(),
                "reward/train/lr": self.optimizers().param_groups[0]["lr"],
            },
            prog_bar=True,
        )
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        rewards, prefers, gold = self.rewards(batch), batch["prefers"], batch["gold"]
        diff = pairwise_differences(rewards)[prefers]  # (P,)
        gold_gap = pairwise_differences(gold)[prefers]  # (P,)
        real = torch.zeros(gold.numel(), dtype=torch.bool, device=gold.device)
        real = real.index_fill(0, batch["slot"], True).view_as(gold)  # (B, K) slots holding a completion
        self._val.append((diff.cpu(), gold_gap.cpu(), rewards[real].cpu()))

    def on_validation_epoch_end(self) -> None:
        # (P,), (P,), (N,): every rank's validation pairs, so that the metrics cover the whole split
        diff, gold_gap, rewards = (gather_cat(self, torch.cat(x)) for x in zip(*self._val, strict=True))
        self._val.clear()
        metrics = pairwise_metrics(diff, gold_gap, self.bt_temperature)
        metrics |= {
            "reward_mean": rewards.mean().item(),
            "reward_std": rewards.std().item(),
            "loss": bradley_terry_loss(diff).item(),
        }
        self.log_dict({f"reward/val/{k}": v for k, v in metrics.items()}, prog_bar=False)
        if self.trainer.state.fn == "fit":  # keep training the raw weights; after fit the average stays
            self.use_average(False)

    def configure_optimizers(self):
        return build_optimizer(self.model.named_parameters(), self.cfg)


def build(ctx: Context, out: Path) -> dict[str, float]:
    cfg, train, log_dir = ctx.cfg, ctx.cfg.reward_model, ctx.log_dir("reward")
    log_dir.mkdir(parents=True, exist_ok=True)
    init = backbone(ctx)
    collected = ctx.inputs.get("collect")
    default = collected / "preferences.jsonl" if collected else None
    tokenizer = functools.cache(lambda: load_tokenizer(init, dataclasses.replace(cfg.model, tokenizer=None)))
    # every row is checked before the tokenizer loads; conversational pairs are then rendered with the
    # reward model's own chat template, as its scorer will render what it scores
    pairs, name = read_examples(
        cfg.data.preferences, default, tokenizer, cfg.data.on_bad_row, key="data.preferences"
    )
    temperature = read_manifest(collected)["metrics"].get("collect/bt_temperature") if collected else None
    tokenizer = tokenizer()
    model = load_reward_model(init, cfg.model, tokenizer, new_head=True, pool=train.pool)
    params = {"reward/params": float(sum(p.numel() for p in model.parameters()))}  # backbone and head
    model = apply_peft(model, cfg.peft, task_type="SEQ_CLS")
    model.train()
    data = PreferenceDataModule(
        pairs, tokenizer, train.batch_size, cfg.data.max_length, cfg.data.val_size, stage_seed(cfg, "reward")
    )
    log.info("%s: %d train and %d validation prompts", name, len(data.train_groups), len(data.val_groups))
    remove_dropout = add_training_dropout(model, train.dropout)
    checkpoints = ctx.checkpoint_dir / CHECKPOINTS if ctx.checkpoint_dir else None
    module = RewardModule(model, train, temperature, checkpoints)
    metrics = fit(cfg, "reward", train, module, data, log_dir, checkpoints) | params
    if worker_rank():  # under DDP rank 0 exports and normalizes
        return metrics
    remove_dropout()
    module.use_average(True)  # export the averaged weights, the ones the final metrics are of

    export_model(module.model, tokenizer, out, dataclasses.replace(cfg.peft, save="merged"))
    if train.normalize:
        metrics |= normalize(out, policy_samples(collected, pairs), ctx.device)
    return metrics


def backbone(ctx: Context) -> str | Path:
    """The folder or hub id the reward model starts from (`reward_model.backbone`)."""
    rm, cfg = ctx.cfg.reward_model, ctx.cfg
    if rm.backbone == "policy":
        return ctx.inputs.get(rm.init) or cfg.model.name_or_path
    return ctx.inputs.get("backbone") or rm.backbone  # a size's pretrain artifact, or an HF model


def policy_samples(collected: Path | None, pairs) -> tuple[list[str], list[str]]:
    """Samples of the policy to normalize on: the collected ones, else the completions of the pairs."""
    if collected is not None:
        rows = [json.loads(line) for line in (collected / "samples.jsonl").open()]
        texts = [(r["prompt"], c) for r in rows for c in r["completions"]]
    else:
        texts = sorted({(p.prompt, c) for p in pairs for c in (p.chosen, p.rejected)})
    return [p for p, _ in texts], [c for _, c in texts]


def normalize(folder: Path, samples: tuple[list[str], list[str]], device) -> dict[str, float]:
    """Store the mean and std of the raw reward on the policy's samples in the model's config."""
    scorer = RewardModelScorer(folder, device=device)
    raw = scorer.raw_score(*samples)
    mean, std = raw.mean().item(), raw.std().clamp(min=1e-6).item()
    scorer.model.config.reward_mean, scorer.model.config.reward_std = mean, std
    scorer.model.config.save_pretrained(folder)
    return {"reward/normalization/mean": mean, "reward/normalization/std": std}


STAGE = Stage(
    "reward",
    version=1,
    upstream=upstream,
    key_config=key_config,
    build=build,
    check=check,
    derived=derived,
    distributed=True,
    resumable=True,
)
