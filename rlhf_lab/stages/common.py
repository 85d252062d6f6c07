"""What every stage receives (`Context`) and the pieces of config that enter artifact keys."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import RichProgressBar

from rlhf_lab.config import Config, SourceConfig, TrainConfig
from rlhf_lab.data.chat import Prompt
from rlhf_lab.data.formats import read_prompts
from rlhf_lab.faults import SaveOnSigterm
from rlhf_lab.models import folder_settings, load_causal_lm, load_tokenizer
from rlhf_lab.seeds import without_seed
from rlhf_lab.tracking import make_callbacks, make_loggers
from rlhf_lab.world import World, build_world, world_key

log = logging.getLogger(__name__)
CHECKPOINTS = "checkpoints"  # in a stage's scratch folder, so that rerunning an interrupted command resumes


@dataclass
class Context:
    """A stage's view of the run: the typed config, the run directory and its upstream artifacts."""

    cfg: Config
    run_dir: Path
    inputs: dict[str, Path] = field(default_factory=dict)
    checkpoint_dir: Path | None = None  # resumable state shared by every rank (default: the output folder)

    @cached_property
    def world(self) -> World:
        """The tiny world, built on first access (only stages that need its data or model touch it)."""
        return build_world(self.cfg.world, self.cfg.paths.world)

    def log_dir(self, stage: str) -> Path:
        return self.run_dir / stage

    def default_source(self, src: SourceConfig, world_file: str) -> Path | None:
        """The tiny world's `world_file` (corpus, sft, prompts, eval_prompts) when `src.path` is null."""
        return getattr(self.world, world_file) if src.path is None else None

    def prompts(self, src: SourceConfig, world_file: str, limit: int | None = None) -> list[Prompt]:
        """`limit` prompts of `src` (or of the world's `world_file`), in order and cycling through them
        again when there are fewer: each pass samples new completions. All of them if `limit` is None.
        Each is a string or, from conversational rows, a message list that the policy's chat template
        renders when it samples (`data.prompts.encode_prompts`)."""
        prompts, name = read_prompts(
            src, self.default_source(src, world_file), self.cfg.data.on_bad_row, key=f"data.{world_file}"
        )
        if limit is None:
            return prompts
        if len(prompts) < limit:
            log.info(
                "%s has %d prompts: each is used up to %d times",
                name,
                len(prompts),
                -(-limit // len(prompts)),
            )
        return [prompts[i % len(prompts)] for i in range(limit)]

    @property
    def device(self) -> torch.device:
        """Where inference-only stages (collect, bon) run: the first GPU if the trainer asks for one."""
        wants_gpu = self.cfg.trainer.accelerator in ("gpu", "cuda", "auto")
        return torch.device("cuda" if wants_gpu and torch.cuda.is_available() else "cpu")

    def load_policy(self, path: str | Path):
        """(model on `device`, tokenizer) of a policy folder, each loaded from the folder itself."""
        model_cfg = folder_settings(self.cfg.model)
        tokenizer = load_tokenizer(path, model_cfg)
        return load_causal_lm(path, model_cfg, tokenizer).to(self.device), tokenizer


def model_key(cfg: Config) -> dict:
    """The starting model: a named model's config, or the tiny world's config hash (and the
    architecture of `model.size` when one is named; runs without it keep their keys)."""
    settings = dataclasses.asdict(cfg.model)
    size = settings.pop("size")
    if cfg.model.name_or_path is not None:
        return settings
    if size is not None:
        settings["size"] = dataclasses.asdict(cfg.world.sizes[size])
    return {"world": world_key(cfg.world), **settings}


def sized(cfg: Config, size: str) -> Config:
    """The run's config with the tiny world's model at the named `size` (world.sizes) as the starting
    model: under it the pretrain stage pretrains that size on the world's corpus, with its tokenizer."""
    model = dataclasses.replace(cfg.model, name_or_path=None, tokenizer=None, size=size)
    return dataclasses.replace(cfg, model=model)


def data_key(cfg: Config, source: str) -> dict:
    """One data source and the tokenization rules; the tiny world's sources are keyed by its hash."""
    src = getattr(cfg.data, source)
    rules = {k: getattr(cfg.data, k) for k in ("max_length", "max_prompt_length", "val_size", "on_bad_row")}
    world = world_key(cfg.world) if src.path is None else None
    return {"source": dataclasses.asdict(src), "world": world, **rules}


def comparisons_key(cfg: Config) -> dict:
    """What determines labeled comparisons besides the policy that samples them: the collect settings,
    the labeler (a file of human labels by its content) and the prompts. Keyed by collect and online DPO."""
    labeler = dataclasses.asdict(cfg.labeler)
    if not labeler["length_bonus"]:  # keyed only when set: labels without a length bias keep their keys
        del labeler["length_bonus"]
    if cfg.labeler.kind == "file":  # the labels are part of the artifact: key on the file's content
        labeler["sha256"] = hashlib.sha256(Path(cfg.labeler.path).read_bytes()).hexdigest()
    return {"collect": without_seed(cfg.collect), "labeler": labeler, "prompts": data_key(cfg, "prompts")}


def trainer_key(cfg: Config) -> dict:
    """Trainer settings that change the weights (devices change the global batch; precision the maths)."""
    t = cfg.trainer
    return {
        "devices": t.devices,
        "num_nodes": t.num_nodes,
        "strategy": t.strategy,
        "precision": t.precision,
        "deterministic": t.deterministic,
    }


def write_table(rows: list[dict], out: Path, name: str, columns: list[str] | None = None) -> None:
    """`<name>.json` and `<name>.csv` of a result table (columns: the first row's keys by default;
    a row without a column leaves its cell empty)."""
    (out / f"{name}.json").write_text(json.dumps(rows, indent=2))
    with open(out / f"{name}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns or list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def fit(
    cfg: Config,
    stage: str,
    train: TrainConfig,
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    log_dir: Path,
    checkpoint_dir: Path | None = None,
) -> dict[str, float]:
    """Train with a Lightning Trainer built from `cfg.trainer` for `train.max_steps` optimizer steps,
    validating every `train.val_every`; return the metrics of a final validation.

    A `last.ckpt` is saved in `checkpoint_dir` (default: the log folder) at each validation, and on
    SIGTERM at the step reached; with `resume=auto` a run finding one there resumes from it.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_dir = checkpoint_dir or log_dir / "checkpoints"
    last = checkpoint_dir / "last.ckpt"
    resume = cfg.resume == "auto" and last.is_file()
    if resume:
        log.info("%s: resuming from %s", stage, last)
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        max_steps=train.max_steps,
        max_epochs=-1,
        val_check_interval=train.val_every * train.accumulate_grad_batches,
        check_val_every_n_epoch=None,
        limit_val_batches=train.val_batches,
        num_sanity_val_steps=0,
        accumulate_grad_batches=train.accumulate_grad_batches,
        gradient_clip_val=train.grad_clip or None,
        logger=make_loggers(cfg, stage, log_dir),
        callbacks=[*make_callbacks(cfg, checkpoint_dir, train.val_every), SaveOnSigterm(last)],
        default_root_dir=str(log_dir),
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resume else None)
    check_ranks_agree(trainer, module)
    final = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    return {k: float(v) for k, v in final.items()}


def gather_cat(module: L.LightningModule, x: torch.Tensor) -> torch.Tensor:
    """A 1-D tensor of any length concatenated over the ranks (every rank gets all), e.g. the
    validation pairs each rank scored; `x` itself outside data parallelism."""
    if module.trainer.world_size < 2:
        return x
    sizes = module.all_gather(torch.tensor([x.numel()], device=module.device)).flatten()  # (ranks,)
    padded = x.new_zeros(int(sizes.max())).to(module.device)
    padded[: x.numel()] = x.to(module.device)
    gathered = module.all_gather(padded)  # (ranks, max)
    return torch.cat([g[: int(n)] for g, n in zip(gathered, sizes, strict=True)]).cpu()


def check_ranks_agree(trainer: L.Trainer, module: torch.nn.Module) -> None:
    """Under data parallelism every rank must end with the same weights: compare checksums of them."""
    if trainer.world_size < 2:
        return
    params = [p.detach().double() for p in module.parameters()]
    checksum = torch.stack([sum(p.sum() for p in params), sum((p * p).sum() for p in params)])  # (2,)
    gathered = trainer.strategy.all_gather(checksum.to(trainer.strategy.root_device))  # (ranks, 2)
    if not all(torch.equal(g, gathered[0]) for g in gathered):
        raise RuntimeError(f"the {trainer.world_size} ranks end with different weights: {gathered.tolist()}")
    log.info("all %d ranks end with the same weights (checksum %.6f)", trainer.world_size, checksum[0].item())


class _Steps(torch.utils.data.IterableDataset):
    """What Lightning iterates: the numbers of the steps still to run (read after a checkpoint restore)."""

    def __init__(self, module, max_steps: int):
        self.module, self.max_steps = module, max_steps

    def __iter__(self):
        return iter(range(self.module.step_count, self.max_steps))

    def __len__(self) -> int:
        return self.max_steps


def fit_steps(
    module, cfg: Config, stage: str, max_steps: int, checkpoint: Path, resume: bool, log_dir
) -> L.Trainer:
    """Train a module that makes its own batches (RL, DPO) for `max_steps` steps, one per iteration, from
    `module.step_count`; resumed from `checkpoint` when `resume`, saved there on SIGTERM."""
    progress_bar = [RichProgressBar()] if cfg.trainer.enable_progress_bar else []
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        max_epochs=1,
        max_steps=-1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=make_loggers(cfg, stage, log_dir),
        callbacks=[SaveOnSigterm(checkpoint), *progress_bar],
        enable_checkpointing=False,
        default_root_dir=str(log_dir),
    )
    steps = torch.utils.data.DataLoader(_Steps(module, max_steps), batch_size=None)
    trainer.fit(module, train_dataloaders=steps, ckpt_path=str(checkpoint) if resume else None)
    return trainer
