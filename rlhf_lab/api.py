"""The Python API: what `rlhf-lab` does, from a notebook or a script.

    from rlhf_lab import api
    cfg = api.compose("stage=rl", "algo=rloo", "algo.kl.beta=0.1")   # the CLI's overrides
    result = api.run(cfg)                                             # builds or reuses every stage
    policy, tokenizer = api.load_policy(result["artifacts"]["rl"])
    api.generate(policy, tokenizer, ["The film was"], max_new_tokens=20)

Configs are composed by Hydra from the same `conf/` (`CONF_DIR`) and validated by the same schema as
on the command line; artifacts land in the same cache, so the CLI and the API share their work.
"""

from __future__ import annotations

import time
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import DictConfig

from rlhf_lab.config import Config, ConfigError, ModelConfig, register_configs, upgrade_overrides, validate
from rlhf_lab.repro import pin
from rlhf_lab.runinfo import write_run_info


def conf_dir() -> Path:
    """The config folder: the copy inside the installed package (`pip install .` puts the repository's
    top-level `conf/` there, see setup.py), else the checkout's `conf/` (an editable install, a clone)."""
    package = Path(__file__).resolve().parent
    for folder in (package / "conf", package.parent / "conf"):
        if (folder / "config.yaml").is_file():
            return folder
    raise FileNotFoundError(f"no configs: neither {package / 'conf'} nor {package.parent / 'conf'} exists")


CONF_DIR = conf_dir()


def compose_config(*overrides: str) -> DictConfig:
    """The composed, unvalidated config, exactly as `rlhf-lab <overrides>` sees it."""
    register_configs()  # the schema that conf/config.yaml starts from
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=upgrade_overrides(list(overrides)))


def compose(*overrides: str) -> Config:
    """The typed, validated config of `rlhf-lab <overrides>` (a ConfigError names every bad key)."""
    return validate(compose_config(*overrides))


def run(cfg: Config, run_dir: str | Path | None = None) -> dict:
    """Run `cfg.pipeline` (or `cfg.stage`) like the CLI; logs and run_info.json go to `run_dir` (default: a
    new folder under `paths.runs/api/`). Returns the run's record: status, artifacts by stage, metrics.
    `repro=portable` must be set before this process's torch computes anything (`repro.pin`)."""
    if cfg.stage == "label":
        raise ConfigError(
            "stage: label serves the labeling page until it is stopped: run `rlhf-lab stage=label`, or "
            "rlhf_lab.label.serve.serve(cfg.label, <pairs>, seed) from Python"
        )
    arithmetic = pin(cfg.repro.mode, cfg.trainer.accelerator)  # before the pipeline's torch runs a kernel
    from rlhf_lab.pipeline import run_pipeline

    if run_dir is None:
        run_dir = Path(cfg.paths.runs) / "api" / cfg.stage / time.strftime("%Y-%m-%d_%H-%M-%S")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_run_info(run_dir, repro=arithmetic)
    return run_pipeline(cfg, run_dir)


def load_policy(path: str | Path, model: ModelConfig | None = None):
    """(model, tokenizer) of a policy folder (an artifact, or any HF causal-LM folder or hub name)."""
    from rlhf_lab.models import load_causal_lm, load_tokenizer

    model = model or ModelConfig()
    tokenizer = load_tokenizer(path, model)
    return load_causal_lm(path, model, tokenizer), tokenizer


def generate(policy, tokenizer, prompts: list[str], seed: int = 0, **sampling) -> list[str]:
    """One completion per prompt with the shared KV-cached sampler (`rollout.generate_text` options:
    max_new_tokens, temperature, top_k, top_p, do_sample, batch_size)."""
    import torch

    from rlhf_lab.rollout import generate_text

    generator = torch.Generator(device=next(policy.parameters()).device).manual_seed(seed)
    return generate_text(policy, tokenizer, prompts, generator=generator, **sampling)
