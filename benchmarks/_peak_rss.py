"""Run a command as a child process and report the child's own peak resident memory.

    python benchmarks/_peak_rss.py OUT.json CMD [ARGS...]

`os.wait4` returns the rusage of that one child (and of the processes it waited for), unlike
`getrusage(RUSAGE_CHILDREN)`, which is the maximum over every child this process ever had. Writes
{"returncode", "peak_rss_mb", "wall_s"} to OUT.json and exits with the child's status.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    out, command = Path(sys.argv[1]), sys.argv[2:]
    start = time.perf_counter()
    child = subprocess.Popen(command)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)  # so Popen does not wait again
    report = {
        "returncode": child.returncode,
        "peak_rss_mb": usage.ru_maxrss / 1024,  # KiB on Linux
        "wall_s": time.perf_counter() - start,
    }
    out.write_text(json.dumps(report))
    sys.exit(child.returncode if child.returncode >= 0 else 128 - child.returncode)


if __name__ == "__main__":
    main()
