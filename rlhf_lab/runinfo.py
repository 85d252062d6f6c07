"""What a run directory records besides Hydra's config files: git commit, versions, command."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

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


def git_commit() -> str | None:
    """The commit of the rlhf_lab checkout, with '-dirty' when it has uncommitted changes."""
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


def write_run_info(run_dir: Path) -> None:
    info = {"command": sys.argv, "git_commit": git_commit(), "versions": package_versions()}
    (Path(run_dir) / "run_info.json").write_text(json.dumps(info, indent=2))
