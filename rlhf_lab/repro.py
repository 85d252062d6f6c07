"""Portable arithmetic (`repro=portable`): the same command computes the same floats on any x86-64 CPU.

torch's CPU maths picks its code by the processor: ATen runs AVX2 or AVX-512 copies of its kernels,
MKL dispatches matrix products by CPU model, and parallel loops split their work by the thread count.
Each choice rounds differently, so one run gives other numbers on another machine. `pin` fixes every
choice before torch runs its first kernel (docs/reproducibility.md has the measurements):

    ATEN_CPU_CAPABILITY=default   ATen's baseline x86-64 kernels, not its AVX2/AVX-512 copies
                                  (torch.backends.cpu.get_cpu_capability; PyTorch's README, "CPU
                                  capability"); read when the first kernel is dispatched
    MKL_CBWR=COMPATIBLE           MKL's Conditional Numerical Reproducibility, one code branch on every
                                  Intel and compatible CPU (oneMKL Developer Guide, "Setting the
                                  Environment Variable for Conditional Numerical Reproducibility"); read
                                  at MKL's first call
    MKL_DYNAMIC=FALSE, OMP_DYNAMIC=FALSE, OMP_NUM_THREADS=MKL_NUM_THREADS=2, torch.set_num_threads(2)
                                  a fixed thread count: MKL's products and ATen's parallel reductions
                                  split their sums by it (oneMKL Developer Guide, "Reproducibility
                                  Conditions"); OMP_NUM_THREADS also stops Lightning's DDP from choosing
                                  its own (lightning.fabric.utilities.distributed._set_num_threads_if_needed)
    ONEDNN_MAX_CPU_ISA=SSE41      oneDNN's JIT kernels (convolutions, bf16 products) at SSE4.1 (oneDNN
                                  "CPU Dispatcher Control"); read at the first oneDNN primitive

The pins are environment variables, so Lightning's DDP processes and Hydra's multirun jobs inherit them.
`pin` refuses, in one line naming the setting, where it cannot pin: a GPU, a BLAS other than MKL, a
process whose torch already chose its kernels. `python -m rlhf_lab.repro check A B` compares a rerun's
CSVs with committed ones exactly and names the first difference.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import hashlib
import logging
import os
import platform
import sys
from pathlib import Path

from rlhf_lab.errors import UserError

THREADS = 2  # part of the arithmetic: a sum split over 2 threads rounds otherwise than over 1 or 3
PINS = {
    "ATEN_CPU_CAPABILITY": "default",
    "MKL_CBWR": "COMPATIBLE",
    "MKL_DYNAMIC": "FALSE",
    "OMP_DYNAMIC": "FALSE",
    "OMP_NUM_THREADS": str(THREADS),
    "MKL_NUM_THREADS": str(THREADS),
    "ONEDNN_MAX_CPU_ISA": "SSE41",
    "DNNL_MAX_CPU_ISA": "SSE41",
}
MODES = ("native", "portable")
# The canary's digest in portable mode, by torch version: measured on an AVX-512 AMD EPYC and unchanged
# under every restriction of tests/test_repro.py. Another digest means other arithmetic.
CANARY = {"2.13.0+cpu": "7ea4924d3a058945"}

log = logging.getLogger(__name__)


class ReproError(UserError):
    """Portable arithmetic cannot be pinned here; the message names the setting and the cause."""


def pin(mode: str, accelerator: str = "cpu") -> dict:
    """Put `mode`'s arithmetic in effect in this process and return what is in effect (for run_info.json).

    native leaves everything as found. portable sets `PINS` (over any value the caller set), best before
    torch is imported (OpenMP reads OMP_DYNAMIC when it loads) and at the latest before torch computes
    anything, then checks that they hold.
    """
    if mode not in MODES:
        raise ReproError(f"repro={mode}: unknown mode; choose one of {', '.join(MODES)}")
    if mode == "portable":
        os.environ.update(PINS)
    import torch

    if mode == "portable":
        refuse_unpinned(accelerator)
        torch.set_num_threads(THREADS)
    return in_effect(mode)


def refuse_unpinned(accelerator: str) -> None:
    """Refuse where a pin cannot hold: a GPU, another BLAS or CPU family, kernels chosen before `pin`."""
    import torch

    if accelerator not in ("cpu", "auto") or (accelerator == "auto" and torch.cuda.is_available()):
        raise ReproError(
            f"repro=portable: trainer.accelerator={accelerator} computes on a GPU, whose kernels cannot be "
            "pinned; use trainer=cpu, or repro=native (docs/reproducibility.md: what holds on a GPU)"
        )
    if blas() != "mkl" or platform.machine() not in ("x86_64", "AMD64"):
        raise ReproError(
            f"repro=portable: torch uses BLAS {blas()} on {platform.machine()}, whose code path cannot be "
            "pinned (MKL on x86-64 only); use repro=native (docs/reproducibility.md: another BLAS)"
        )
    capability = torch.backends.cpu.get_cpu_capability()
    if capability != "DEFAULT":
        raise ReproError(
            f"repro=portable: torch already chose its {capability} kernels in this process; set the mode "
            "before any torch computation (a fresh process, or rlhf_lab.repro.pin('portable') first)"
        )


def blas() -> str:
    """The BLAS torch was built with (BLAS_INFO in torch.__config__.show()), e.g. mkl, open, accelerate."""
    import torch

    info = torch.__config__.show()
    return info.split("BLAS_INFO=", 1)[1].split(",", 1)[0] if "BLAS_INFO=" in info else "unknown"


def canary() -> str:
    """A digest of a matrix product, a softmax, a SiLU, a log and a long sum of inputs built exactly from
    integers: the kernels a transformer runs, so that other arithmetic shows at once."""
    import torch

    def uniform(n: int, step: float):  # exactly the same floats everywhere: n multiples of step, mod 1
        return (torch.arange(n, dtype=torch.float64) * step).frac().sub(0.5).float()

    z = uniform(256 * 320, 0.6180339887).view(256, 320) @ uniform(320 * 128, 0.4142135623).view(320, 128)
    t = uniform(300_007, 0.7548776662)  # z and t are large enough for MKL and ATen to split over threads
    outs = (z, z.softmax(-1), torch.nn.functional.silu(z), z.abs().log1p(), t.sum(), t.exp().sum())
    digest = hashlib.sha256()
    for out in outs:
        digest.update(out.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def in_effect(mode: str) -> dict:
    """What decides this process's arithmetic: the mode, torch's kernels, threads, BLAS, pins, CPU."""
    import torch

    record = {
        "mode": mode,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "blas": blas(),
        "cpu": cpu_model(),
        "env": {name: os.environ[name] for name in PINS if name in os.environ},
    }
    if mode == "portable":
        record["canary"] = digest = canary()
        record["canary_reference"] = expected = CANARY.get(torch.__version__)
        if digest != expected:
            log.warning(
                "repro=portable: this machine's arithmetic differs from the reference of torch %s (canary "
                "%s, reference %s): results will not match committed portable ones bitwise",
                torch.__version__,
                digest,
                expected,
            )
    return record


def cpu_model() -> str:
    """The processor's model name (/proc/cpuinfo on Linux, platform.processor() elsewhere)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


# ------------------------------------------------------------------------------------ check
# Columns that measure the machine, not the arithmetic: wall-clock times, throughput, memory, run paths.
UNREPRODUCIBLE = ("run", "*/time/*", "*/memory/*", "*tokens_per_second*")


def first_difference(committed: Path, rerun: Path, ignore=UNREPRODUCIBLE) -> str | None:
    """The first cell where two CSV files differ, exactly as written ('row 3 (first cell ...), column
    gold: committed 0.75, rerun 0.7501'), or None when they are equal outside the `ignore` columns."""
    a, b = read_rows(committed), read_rows(rerun)
    if a[0] != b[0]:
        return f"the columns differ: committed {a[0]}, rerun {b[0]}"
    keep = [i for i, name in enumerate(a[0]) if not any(fnmatch.fnmatch(name, p) for p in ignore)]
    for n, (row, other) in enumerate(zip(a[1:], b[1:], strict=False), start=1):
        for i in keep:
            if row[i] != other[i]:
                return f"row {n} ({a[0][0]}={row[0]}), column {a[0][i]}: committed {row[i]}, rerun {other[i]}"
    if len(a) != len(b):
        return f"the row counts differ: committed {len(a) - 1}, rerun {len(b) - 1}"
    return None


def read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def pairs(committed: Path, rerun: Path) -> list[tuple[Path, Path]]:
    """(committed, rerun) files: the two files, or each CSV of the committed folder and its namesake."""
    if committed.is_dir():
        return [(c, rerun / c.name) for c in sorted(committed.glob("*.csv"))]
    return [(committed, rerun)]


def check(committed: Path, rerun: Path, ignore=UNREPRODUCIBLE) -> int:
    """Print whether each committed CSV is reproduced exactly, or its first difference; 1 if any is not."""
    status = 0
    for ours, theirs in pairs(committed, rerun):
        found = f"missing: {theirs}" if not theirs.is_file() else first_difference(ours, theirs, ignore)
        print(f"{ours}: {'equal' if found is None else 'DIFFERS, ' + found}")
        status |= found is not None
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlhf_lab.repro", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    checking = commands.add_parser("check", help="compare a rerun's CSVs with committed ones, exactly")
    checking.add_argument("committed", type=Path, help="a committed CSV, or a folder of them")
    checking.add_argument("rerun", type=Path, help="the rerun's CSV, or the folder holding its CSVs")
    checking.add_argument(
        "--ignore", nargs="*", default=list(UNREPRODUCIBLE), help="column patterns left out (fnmatch)"
    )
    commands.add_parser("env", help='the pins as shell exports: eval "$(python -m rlhf_lab.repro env)"')
    args = parser.parse_args(argv)
    if args.command == "env":
        print("\n".join(f"export {name}={value}" for name, value in PINS.items()))
        return 0
    return check(args.committed, args.rerun, args.ignore)


if __name__ == "__main__":
    sys.exit(main())
