"""Serving the labeling page: open the label file (replaying it: every annotator resumes where they
stopped), bind the address, print where to go, serve with uvicorn until Ctrl-C or SIGTERM, then print
and write the summary.

On a loopback address (the default, 127.0.0.1) no token is needed unless `label.token` sets one; on
any other address every request needs the access token, `label.token` or one generated here and
printed with the address (only on the terminal, not in the run's log file).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import secrets
import shlex
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn

from rlhf_lab.config.label import LabelConfig
from rlhf_lab.errors import UserError
from rlhf_lab.label.assign import Desk
from rlhf_lab.label.pairs import load_pairs
from rlhf_lab.label.records import replay
from rlhf_lab.label.server import Labeling, create_app
from rlhf_lab.label.store import LabelStore
from rlhf_lab.label.summary import to_markdown

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def access_token(host: str, token: str | None) -> str | None:
    """The token every request must carry: the configured one, else a new one off loopback, else none."""
    if token:
        return token
    return None if is_loopback(host) else secrets.token_urlsafe(24)


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port); port 0 takes any free port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise UserError(
            f"label.host, label.port: cannot listen on {host}:{port} ({err.strerror}); choose another "
            "port (label.port=0 takes any free one)"
        ) from None
    sock.listen(128)
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server that announces itself once listening, and stops quietly on Ctrl-C or SIGTERM
    (requests in flight finish; every acknowledged label is on disk already)."""

    def __init__(self, config: uvicorn.Config, announce):
        super().__init__(config)
        self.announce = announce

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            self.announce()

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def train_command(labels: Path, overrides: list[str]) -> str:
    """The command that trains a reward model on the label file: the labeling run's other overrides
    (which chose its collect artifact), with labeler=file reading the file."""
    kept = [o for o in overrides if not o.startswith(("stage=", "label.", "labeler", "+label", "~label"))]
    return shlex.join(["rlhf-lab", "stage=reward", *kept, "labeler=file", f"labeler.path={labels}"])


def open_labeling(settings: LabelConfig, pairs_source: str, seed: int, overrides: list[str]) -> Labeling:
    """The pairs, the label file (locked, replayed) and the desk that hands pairs out."""
    pairs = load_pairs(pairs_source)
    store = LabelStore(settings.labels)
    try:
        ledger = replay(str(store.path), store.read())
        desk = Desk(
            pairs,
            ledger,
            seed=seed,
            overlap=settings.overlap,
            overlap_annotators=settings.overlap_annotators,
            claim_seconds=settings.claim_minutes * 60,
        )
    except BaseException:
        store.close()
        raise
    foreign = sum(d.pair not in desk.pairs for d in ledger.decisions())
    if foreign:
        log.warning(
            "%s: %d decisions are on pairs not in %s; kept, and left out here",
            store.path,
            foreign,
            pairs_source,
        )
    comparison = next((p.comparison for p in pairs if p.comparison is not None), None)
    train = train_command(store.path, overrides) if comparison is None else winrate_command(store.path)
    return Labeling(desk, store, seed, settings.guideline, train, comparison)


def winrate_command(labels: Path) -> str:
    """The command that reports the win rates of the comparisons judged in the label file."""
    return shlex.join(["rlhf-lab-winrate", str(labels)])


def serve(
    settings: LabelConfig,
    pairs_source: str,
    seed: int,
    run_dir: Path | None = None,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """Serve the labeling page until stopped; return the summary of the label file. `overrides`: the
    command line's, for the training command the page and the terminal show."""
    lab = open_labeling(settings, pairs_source, seed, overrides or [])
    try:
        token = access_token(settings.host, settings.token)
        sock = listen(settings.host, settings.port)
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            create_app(lab, token, settings.host if is_loopback(settings.host) else None),
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            server_header=False,
            timeout_graceful_shutdown=3,
        )
        _Server(config, lambda: announce(lab, settings.host, port, token, pairs_source)).run(sockets=[sock])
        summary = lab.summary()
    finally:
        lab.store.close()
    print(f"\nlabels in {lab.store.path}:\n\n{to_markdown(summary)}", flush=True)
    if run_dir is not None:
        (Path(run_dir) / "summary.md").write_text(to_markdown(summary))
        (Path(run_dir) / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def announce(lab: Labeling, host: str, port: int, token: str | None, pairs_source: str) -> None:
    """Where to go, what is served, where labels go and how to train on them; the URL with its token
    is printed on the terminal only."""
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    ledger = lab.desk.ledger
    log.info(
        "label: serving %d pairs from %s on %s:%d; %d decisions by %d annotators so far in %s",
        len(lab.desk.pairs),
        pairs_source,
        host,
        port,
        len(ledger.standing),
        len(ledger.stacks),
        lab.store.path,
    )
    print(
        f"labeling page: {url}\n"
        + ("" if is_loopback(host) else "  every request needs the access token above\n")
        + f"labels: {lab.store.path}\n"
        + (f"train on them: {lab.train}\n" if lab.comparison is None else f"win rates: {lab.train}\n")
        + "stop with Ctrl-C",
        flush=True,
    )
