"""The label file on disk: appended to, one event a line, each line fsynced before it counts.

Only one labeling server may hold a label file (an exclusive `flock`, released by the kernel when the
process dies, SIGKILL included). A line is written with one `write` of the whole line and then
`fsync`ed; only then does the server answer the request, so every label the page acknowledged is on
disk. What a crash can leave is a last line without its newline (a power cut in the middle of a
write): that line was never acknowledged, and the next start cuts it off, keeping its bytes in
`<file>.torn-<time>` and saying so. Nothing else is ever changed: the file only grows.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from rlhf_lab.errors import UserError
from rlhf_lab.label.records import LabelFileError

log = logging.getLogger(__name__)


class LabelStore:
    """An open label file: `read()` its events, `append()` one (durably), `close()`."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser().resolve()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        self.fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise UserError(
                f"label.labels: {self.path} is open in another labeling server; stop that one, or "
                "give this one another file"
            ) from None
        if created:
            _fsync_dir(self.path.parent)  # the new file's name is durable too
        self.torn = self._cut_torn_line()
        self.lines = self._count_lines()

    def read(self) -> list[tuple[int, dict[str, Any]]]:
        """(row, event) for every line; a line that is not a JSON object is an error naming its row."""
        rows = []
        with open(self.path, "rb") as f:
            for i, raw in enumerate(f):
                if not raw.strip():
                    continue
                try:
                    event = json.loads(raw)
                except (UnicodeDecodeError, json.JSONDecodeError) as err:
                    raise LabelFileError(f"{self.path}: row {i}: not a JSON line ({err})") from err
                if not isinstance(event, dict):
                    raise LabelFileError(f"{self.path}: row {i}: expected a JSON object")
                rows.append((i, event))
        return rows

    def append(self, event: dict[str, Any]) -> int:
        """Write `event` as one line and fsync it; return its row. On a failed write the partial line
        (never acknowledged) is cut off again, so the file stays a sequence of whole lines."""
        data = (json.dumps(event, ensure_ascii=False) + "\n").encode("utf-8")
        size = os.fstat(self.fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view) :]
            os.fsync(self.fd)
        except OSError:
            os.ftruncate(self.fd, size)
            raise
        self.lines += 1
        return self.lines - 1

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # releases the lock
            self.fd = -1

    def _cut_torn_line(self) -> int:
        """Cut a last line that has no newline (never acknowledged); return how many bytes were cut."""
        size = os.fstat(self.fd).st_size
        if size == 0:
            return 0
        if os.pread(self.fd, 1, size - 1) == b"\n":
            return 0
        with open(self.path, "rb") as f:
            data = f.read()
        keep = data.rfind(b"\n") + 1
        aside = self.path.with_name(f"{self.path.name}.torn-{time.strftime('%Y%m%d-%H%M%S')}")
        aside.write_bytes(data[keep:])
        os.ftruncate(self.fd, keep)
        os.fsync(self.fd)
        log.warning(
            "%s: its last line was cut off mid-write (never acknowledged); its %d bytes are kept in %s",
            self.path,
            len(data) - keep,
            aside,
        )
        return len(data) - keep

    def _count_lines(self) -> int:
        with open(self.path, "rb") as f:
            return sum(1 for _ in f)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
