"""What a run directory records besides Hydra's config files: git commit, versions, command, and the
arithmetic in effect (`repro.pin`: the mode, torch's kernels, threads, BLAS, pins, CPU)."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

RUN_INFO = "run_info.json"
PACKAGES = (
    "rlhf-lab",
    "torch",
    "lightning",
    "transformers",
    "peft",
    "datasets",
    "tokenizers",
    "hydra-core",
    "omegaconf",
    "wandb",
    "vaderSentiment",
)


def package_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@functools.cache
def git_commit() -> str | None:
    """The commit of the rlhf_lab checkout, with '-dirty' when it has uncommitted changes: read once, at
    this process's first run, so that every run of a long process (a protocol, a sweep in one process)
    records the code the process loaded, not a commit made on disk while it ran."""
    repo = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty else "")


def write_run_info(run_dir: Path, **more) -> None:
    """run_info.json: the command, the commit, the versions, and `more` (e.g. repro=pin(...))."""
    info = {"command": sys.argv, "git_commit": git_commit(), "versions": package_versions()}
    (Path(run_dir) / RUN_INFO).write_text(json.dumps(info | more, indent=2))


def add_run_info(run_dir: Path, **more) -> None:
    """Add `more` to the run_info.json that `write_run_info` wrote."""
    path = Path(run_dir) / RUN_INFO
    path.write_text(json.dumps(json.loads(path.read_text()) | more, indent=2))
