"""What the labeling page's tests share: pair files, the server as a real `rlhf-lab stage=label` process
(started, SIGKILLed, restarted on the same port), JSON requests to it, and headless Chromium.

Chromium comes from the system's packages (.ci/run installs Debian's `chromium`); its path is
$RLHF_LAB_CHROMIUM, else the first of CHROMIUMS found. Without one the browser tests are skipped, with
how to run them; where the browser is required (CI=true, or RLHF_LAB_REQUIRE_BROWSER=1, as .ci/run
sets) they fail instead. RLHF_LAB_SKIP_BROWSER=1 skips them anywhere.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

CHROMIUMS = (
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
    "chromium",
    "chromium-browser",
    "google-chrome",
)
# Flags for a closed network: no background connections, no first-run or sync requests.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
URL = re.compile(r"labeling page: (http://(\S+?):(\d+)/)(?:\?token=(\S+))?")


def write_pairs(path: Path, n: int, *, tag: str = "") -> Path:
    """n pairs with gold scores (completion_a is the better one by gold)."""
    rows = [
        {
            "prompt": f"Review {tag}{i}: the film",
            "completion_a": f"was wonderful, number {i}.",
            "completion_b": f"was dull, number {i}.",
            "gold_a": 0.5,
            "gold_b": -0.5,
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_run(folder: Path, samples: dict[int, list[tuple[str, str]]], kl: dict[int, float] | None = None):
    """A hand-written RL artifact folder: eval_history.jsonl of (prompt, completion) per step, and
    eval.jsonl with each step's KL (and a logged proxy mean)."""
    folder.mkdir(parents=True, exist_ok=True)
    history = [
        {"step": step, "prompt": p, "completion": c} for step, rows in samples.items() for p, c in rows
    ]
    (folder / "eval_history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    logged = [{"step": s, "kl": (kl or {}).get(s, 0.5 * s), "reward": 0.1 * s} for s in samples]
    (folder / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in logged))
    return folder


def two_policies(root: Path, n: int = 10) -> tuple[Path, Path, list[str]]:
    """Two hand-written RL artifacts on the same n prompts, A's last completions praising the film, B's
    panning it; the last prompt's completion is the same text in both (it is not shown). Steps 0 and 3:
    at step 0 both are the same starting policy."""
    prompts = [f"Review {i}: the film" for i in range(n)]
    start = [(p, f" was a film, number {i}.") for i, p in enumerate(prompts)]
    good = [(p, f" was wonderful and moving, number {i}.") for i, p in enumerate(prompts)]
    bad = [(p, f" was dull and badly acted, number {i}.") for i, p in enumerate(prompts)]
    good[-1] = bad[-1] = (prompts[-1], " was a film like any other.")
    a = write_run(root / "rl_a", {0: start, 3: good})
    b = write_run(root / "rl_b", {0: start, 3: bad})
    return a, b, prompts


def events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


class LabelServer:
    """`rlhf-lab stage=label <overrides>` as a process; the first start takes a free port, restarts
    keep it (the page in a browser reconnects to the same address)."""

    def __init__(self, *overrides: str, home: Path, cwd: Path, port: int = 0):
        self.overrides, self.home, self.cwd, self.port = list(overrides), home, cwd, port
        self.process: subprocess.Popen | None = None
        self.output: list[str] = []
        self.token: str | None = None
        self.base = ""

    def start(self, timeout: float = 180) -> LabelServer:
        env = {
            **os.environ,
            "RLHF_LAB_HOME": str(self.home),
            "WANDB_MODE": "offline",
            "HYDRA_FULL_ERROR": "0",
        }
        args = [
            sys.executable,
            "-m",
            "rlhf_lab.cli",
            "stage=label",
            *self.overrides,
            f"label.port={self.port}",
        ]
        self.output, self.base = [], ""
        self.process = subprocess.Popen(
            args, cwd=self.cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        ready = threading.Event()
        threading.Thread(target=self._read, args=(self.process, ready), daemon=True).start()
        if not ready.wait(timeout) or not self.base:
            self.kill()
            raise AssertionError("the label server did not start:\n" + "".join(self.output))
        return self

    def _read(self, process: subprocess.Popen, ready: threading.Event) -> None:
        for line in process.stdout:
            self.output.append(line)
            match = URL.search(line)
            if match and not ready.is_set():
                self.port = int(match[3])
                self.base = f"http://127.0.0.1:{self.port}"
                self.token = match[4]
                ready.set()
        ready.set()  # the process ended

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)

    def stop(self) -> str:
        """SIGINT (Ctrl-C): a clean stop; the output, summary included."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(30)
        time.sleep(0.1)
        return "".join(self.output)

    def request(self, method: str, path: str, body: Any = None, headers: dict | None = None, raw=None):
        """(status, JSON answer or text) of one request; `raw` bytes are sent as they are."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        head = {"Content-Type": "application/json"} if body is not None else {}
        req = urllib.request.Request(
            self.base + path, data=data, method=method, headers=head | (headers or {})
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as answer:
                return answer.status, _decode(answer.read())
        except urllib.error.HTTPError as err:
            return err.code, _decode(err.read())

    def state(self, annotator: str) -> dict:
        status, data = self.request("GET", f"/api/state?annotator={urllib.request.quote(annotator)}")
        assert status == 200, data
        return data

    def label(self, annotator: str, pair: str, choice: str = "a", request: str | None = None):
        body = {"request": request or uuid.uuid4().hex, "annotator": annotator, "pair": pair}
        return self.request("POST", "/api/label", body | {"choice": choice, "seconds": 1.25})


def _decode(data: bytes):
    try:
        return json.loads(data)
    except ValueError:
        return data.decode("utf-8", "replace")


def browser_required() -> bool:
    """Whether a missing Chromium fails the browser tests rather than skipping them: in CI (CI=true, as
    CI services set it) or with RLHF_LAB_REQUIRE_BROWSER=1 (.ci/run sets it)."""
    ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    return ci or os.environ.get("RLHF_LAB_REQUIRE_BROWSER") == "1"


def find_chromium() -> tuple[str | None, str]:
    """(path, "") of the system's Chromium: $RLHF_LAB_CHROMIUM if set, else the first of CHROMIUMS
    found; or (None, why not and how to run the browser tests)."""
    given = os.environ.get("RLHF_LAB_CHROMIUM")
    for candidate in (given,) if given else CHROMIUMS:
        found = shutil.which(candidate)
        if found:
            return found, ""
    tried = f"RLHF_LAB_CHROMIUM={given}" if given else ", ".join(CHROMIUMS)
    return None, (
        f"no Chromium found (tried {tried}): the labeling page's browser tests need one; "
        "`apt-get install chromium` (as .ci/run does) or RLHF_LAB_CHROMIUM=/path/to/chromium runs them"
    )


def skip_without_browser() -> list[pytest.MarkDecorator]:
    """The browser tests' module mark: skip them, with the reason once in the summary, when there is no
    Chromium and none is required (browser_required), or with RLHF_LAB_SKIP_BROWSER=1; else none."""
    if os.environ.get("RLHF_LAB_SKIP_BROWSER") == "1":
        return [pytest.mark.skip(reason="RLHF_LAB_SKIP_BROWSER=1")]
    path, why = find_chromium()
    return [] if path or browser_required() else [pytest.mark.skip(reason=why)]


def chromium_path() -> str:
    """The system's Chromium; fails the test without one (it is only reached where a browser is
    required: skip_without_browser skipped it otherwise)."""
    path, why = find_chromium()
    if path is None:
        pytest.fail(why + " (required here: CI or RLHF_LAB_REQUIRE_BROWSER=1 is set)")
    return path
