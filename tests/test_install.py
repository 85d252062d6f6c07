"""A non-editable install (`pip install .`) finds its configs from any directory: the wheel carries the
repository's top-level conf/ as rlhf_lab/conf/ (setup.py).

The package is installed with `pip install --no-deps --target` into a folder of its own, which goes first
on PYTHONPATH: `rlhf_lab` then resolves to that copy, and its dependencies to this interpreter's own
environment (a virtual environment or the system's), which nothing here installs into."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LEFT_OUT = (".git", "build", "lab", "*.egg-info", "__pycache__", "wandb", "outputs", "multirun", ".venv*")


def installed_copy(tmp_path: Path) -> Path:
    """The folder where `pip install --no-deps --target` put a non-editable build of a copy of the
    checkout (pip builds in the source folder: a copy keeps the checkout as it is)."""
    source, target = tmp_path / "source", tmp_path / "target"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*LEFT_OUT))
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(source)]
    subprocess.run(pip, check=True, timeout=600)  # builds in an isolated env, as `pip install .` does
    return target


@pytest.mark.slow
def test_a_non_editable_install_finds_its_configs(tmp_path):
    target = installed_copy(tmp_path)
    elsewhere = tmp_path / "elsewhere"  # no rlhf_lab/ or conf/ here
    elsewhere.mkdir()
    path = [str(target), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(args, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)

    show = run(sys.executable, "-c", "import rlhf_lab.api as a; print(a.__file__); print(a.CONF_DIR)")
    assert show.returncode == 0, show.stderr
    module, conf = show.stdout.split()
    installed = Path(module).parent
    assert installed == target / "rlhf_lab", module  # the installed copy, not the checkout
    assert Path(conf) == installed / "conf"
    assert sorted(p.name for p in (installed / "conf").iterdir()) == sorted(
        p.name for p in (REPO / "conf").iterdir()
    )
    static = sorted(p.name for p in (REPO / "rlhf_lab" / "label" / "static").iterdir())
    assert sorted(p.name for p in (installed / "label" / "static").iterdir()) == static  # the labeling page

    job = run(str(target / "bin" / "rlhf-lab"), "stage=pretrain", "--cfg", "job")  # the console script
    assert job.returncode == 0, job.stderr
    assert "stage: pretrain" in job.stdout and "pretrain:" in job.stdout
