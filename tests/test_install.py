"""A non-editable install (`pip install .` into a fresh venv) finds its configs from any directory: the
wheel carries the repository's top-level conf/ as rlhf_lab/conf/ (setup.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LEFT_OUT = (".git", "build", "lab", "*.egg-info", "__pycache__", "wandb", "outputs", "multirun", ".venv-*")


@pytest.mark.slow
def test_a_non_editable_install_finds_its_configs(tmp_path):
    # pip builds in the source folder (build/): build a copy, so that the checkout stays as it is
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*LEFT_OUT))
    venv = tmp_path / "venv"
    # the dependencies come from this interpreter's site-packages; rlhf_lab itself from the wheel
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "-q", str(source)]
    subprocess.run(pip, check=True, timeout=600)  # builds in an isolated env, as `pip install .` does

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    show = "import rlhf_lab.api as a; print(a.__file__); print(a.CONF_DIR)"
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", show],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    installed = Path(where[0]).parent
    assert installed.is_relative_to(venv), where  # the wheel's copy, not the checkout
    assert Path(where[1]) == installed / "conf"
    assert sorted(p.name for p in (installed / "conf").iterdir()) == sorted(
        p.name for p in (REPO / "conf").iterdir()
    )
    static = sorted(p.name for p in (REPO / "rlhf_lab" / "label" / "static").iterdir())
    assert sorted(p.name for p in (installed / "label" / "static").iterdir()) == static  # the labeling page

    job = subprocess.run(
        [str(venv / "bin" / "rlhf-lab"), "stage=pretrain", "--cfg", "job"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert job.returncode == 0, job.stderr
    assert "stage: pretrain" in job.stdout and "pretrain:" in job.stdout
