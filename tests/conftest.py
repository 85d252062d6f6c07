"""Shared fixtures: one lab for the session, configs composed through Hydra like the CLI (with
`debug=fast`), and the artifacts and runs that several test files read. Shared constants and helpers
are in tests/helpers.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rlhf_lab.config import validate
from tests.helpers import PIPELINE, SMALL, compose_config, run

__all__ = ["compose_config"]  # importable from here too, as before


@pytest.fixture(scope="session", autouse=True)
def lab_home(tmp_path_factory) -> Path:
    """Every test writes below one temporary RLHF_LAB_HOME; W&B stays offline and quiet."""
    home = tmp_path_factory.mktemp("lab")
    os.environ["RLHF_LAB_HOME"] = str(home)
    os.environ["WANDB_MODE"] = "offline"
    os.environ["WANDB_SILENT"] = "true"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    return home


@pytest.fixture
def make_cfg():
    """Build a validated, typed config from overrides (`debug=fast` first)."""
    return lambda *overrides: validate(compose_config(*overrides))


@pytest.fixture(scope="session")
def world(lab_home):
    """(config, world) of `debug=fast`: the small tiny world's files, tokenizer and untrained model
    (built in a second or two; nothing is trained)."""
    from rlhf_lab.world import build_world

    cfg = validate(compose_config())
    return cfg, build_world(cfg.world, cfg.paths.world)


# -------------------------------------------------------------------------- trained artifacts (slow)
@pytest.fixture(scope="session")
def reward_run(lab_home, tmp_path_factory):
    """(config, reward artifact, run dir) of `debug=fast` + SMALL; builds pretrain, sft and collect too."""
    from rlhf_lab.pipeline import ensure

    cfg = validate(compose_config(*SMALL))
    run_dir = tmp_path_factory.mktemp("run")
    return cfg, ensure(cfg, "reward", run_dir), run_dir


@pytest.fixture(scope="session")
def sum_reward_run(lab_home, tmp_path_factory):
    """(config, reward artifact) of the same, with the head summed over the completion's tokens."""
    from rlhf_lab.pipeline import ensure

    cfg = validate(compose_config(*SMALL, "reward_model.pool=sum"))
    return cfg, ensure(cfg, "reward", tmp_path_factory.mktemp("run"))


# -------------------------------------------------------------------------- CLI runs (slow)
@pytest.fixture(scope="session")
def quickstart(lab_home, tmp_path_factory) -> tuple[int, str]:
    """`rlhf-lab experiment=quickstart` at PIPELINE's sizes in the session's lab (reusing what the
    other tests built): (exit code, output)."""
    return run("experiment=quickstart", *PIPELINE, home=lab_home, cwd=tmp_path_factory.mktemp("cwd"))


@pytest.fixture(scope="session")
def joblib_sweep(quickstart, lab_home, tmp_path_factory):
    """rloo at two β values and one deliberately bad β, through the joblib launcher, logged to W&B,
    after the quickstart built its upstream: (exit code, output, sweep dir)."""
    cwd = tmp_path_factory.mktemp("cwd")
    sweep_dir = tmp_path_factory.mktemp("sweep")
    code, output = run(
        "-m",
        "stage=rl",
        *PIPELINE,
        "algo=rloo",
        "algo.kl.beta=0.05,0.2,-1",
        "logger=wandb",
        "hydra/launcher=local_parallel",
        f"hydra.sweep.dir={sweep_dir}",
        home=lab_home,
        cwd=cwd,
    )
    return code, output, sweep_dir
