"""Content-addressed artifacts: a folder per (stage, config hash), written atomically.

An artifact is complete when its folder exists under its final name; it is built in a temporary
sibling folder and renamed into place as the last step, so an interrupted build never counts as done.
Parallel jobs (a sweep) that need the same missing artifact take turns through a file lock beside it
(`claim`): the first builds it, the others wait and then find it complete. Its `manifest.json` records
the git commit of the code that built it (`code_commit`) besides the config, inputs and metrics.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from rlhf_lab.runinfo import git_commit, package_versions

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
LOG_FILE = "log.csv"  # in a trained artifact: a copy of its CSV training log
RESULT_FILE = "result.json"  # in a run directory: status, the artifacts used, the metrics


def config_hash(payload: Any, length: int = 12) -> str:
    """A short, stable hash of a JSON-serializable payload (key order does not matter)."""
    text = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


@functools.cache
def code_commit() -> str | None:
    """The git commit of the running rlhf_lab ('-dirty' with uncommitted changes; None outside a git
    checkout), asked once per process: the code that runs is the code that was imported."""
    return git_commit()


def is_complete(path: Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def read_manifest(path: Path) -> dict:
    return json.loads((Path(path) / MANIFEST).read_text())


def scratch_dir(final: Path) -> Path:
    """Where artifact `final` is built (and resumable stages keep their state until it is complete)."""
    return Path(final).parent / f".{Path(final).name}.partial"


def process_rank() -> int:
    """This process's rank in a distributed job, from the launcher's environment (Lightning's DDP
    children, torchrun, SLURM tasks); 0 outside one."""
    return max(int(os.environ.get(var, "0") or 0) for var in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def worker_rank() -> bool:
    """True in the non-zero ranks of a distributed job: they share the artifact that rank 0 builds and
    must not wait on its lock."""
    return process_rank() > 0


@contextmanager
def claim(final: Path) -> Iterator[None]:
    """Hold the lock of artifact `final` (`.<name>.lock` beside it) while checking and building it.

    Another process holding it is waited for, with one log line; a process that dies releases its lock
    (an OS file lock), so a killed job never blocks the others.
    """
    if worker_rank():
        yield
        return
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(final.parent / f".{final.name}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("waiting for another job building %s", final)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


@contextmanager
def building(final: Path, resumable: bool = False, **manifest: Any) -> Iterator[Path]:
    """Yield a scratch folder; on success write the manifest and move it to `final` atomically.

    Keyword arguments go into the manifest, and so does `<scratch>/metrics.json` if the builder
    wrote one. On an exception `final` is left untouched and the scratch folder is removed, or kept
    for the next attempt to resume from when `resumable` (the builder decides what it can reuse).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = scratch_dir(final)
    if not resumable:
        shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(exist_ok=True)
    done = False
    try:
        yield scratch
        metrics_file = scratch / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
        record = dict(
            manifest,
            metrics=metrics,
            created=time.strftime("%Y-%m-%dT%H:%M:%S"),
            commit=code_commit(),
            versions=package_versions(),
        )
        (scratch / MANIFEST).write_text(json.dumps(record, indent=2, default=str))
        if final.exists():  # rebuilt on purpose (cache=false): replace the old artifact
            shutil.rmtree(final)
        os.replace(scratch, final)
        done = True
    finally:
        if done or not resumable:
            shutil.rmtree(scratch, ignore_errors=True)
