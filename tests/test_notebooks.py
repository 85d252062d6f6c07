"""The notebooks run top to bottom in a fresh kernel: the API walkthrough, and the analysis of a sweep."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def execute_notebook(name: str, cwd: Path) -> None:
    """Run every cell of notebooks/<name> in a fresh kernel; a failing cell raises with its traceback."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(Path(__file__).parent.parent / "notebooks" / name, as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    ).execute()


def test_the_walkthrough_notebook_runs(tmp_path):
    execute_notebook("walkthrough.ipynb", tmp_path)


def test_the_sweep_analysis_notebook_runs_on_a_sweep(joblib_sweep, tmp_path, monkeypatch):
    _, _, sweep_dir = joblib_sweep
    monkeypatch.setenv("RLHF_LAB_SWEEP", str(sweep_dir))
    execute_notebook("sweep_analysis.ipynb", tmp_path)
    assert (sweep_dir / "report" / "gold_vs_kl.png").is_file()
