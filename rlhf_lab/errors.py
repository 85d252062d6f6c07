"""Errors that mean "your input is wrong" or "you stopped me", at the bottom of the import graph (this
module imports nothing of rlhf_lab).

`UserError` is the base of every error whose message is written for the person running rlhf_lab: a bad
config value (`config.ConfigError`), a bad data row or file (`data.sources.DataError`,
`data.formats.BadRow`), a run that diverges under its settings (`faults.NonFiniteError`). The command
line prints such a message alone, with no traceback (`HYDRA_FULL_ERROR=1` shows it), and exits 1; any
other exception is a bug and keeps its traceback. `result.json` records the traceback either way.

`Stopped` ends a command stopped by SIGTERM outside a Lightning Trainer (inside one, Lightning's own
SIGTERMException does, see `faults.SaveOnSigterm`): exit code 143, `result.json` says "stopped".
"""

from __future__ import annotations

import signal

SIGTERM_EXIT = 128 + signal.SIGTERM  # 143: how a shell reports a process that SIGTERM ended


class UserError(Exception):
    """The user's input (a config value, a data row, a file) is wrong; the message says what to change."""


class Stopped(SystemExit):
    """SIGTERM outside a Lightning Trainer. A SystemExit, so that no `except Exception` swallows it."""

    def __init__(self) -> None:
        super().__init__(SIGTERM_EXIT)
