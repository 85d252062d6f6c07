"""Comparisons a reviewer accepts: `rlhf-lab-compare experiments/<name>/protocol.yaml`.

The protocol file declares the arms (config overrides), the fields each arm tunes and their grid, tuning
seeds disjoint from ≥ 5 evaluation seeds, the selection rule, the budget axis and value at which arms are
compared (and, optionally, further budgets and a matched KL), and the primary comparison. The command
runs every tuning run through the pipeline and its cache, chooses each arm's setting by the rule, runs the
evaluation seeds, and writes the report beside the protocol file (Henderson et al. 2018; Agarwal et al.
2021). docs/comparisons.md describes it.

spec.py      the protocol file, read and checked (every problem named by its key)
runner.py    the runs, one after another in this process (`api.run`), and the choice of settings
curves.py    each run's evaluation curve with its budget; the value at a budget or a KL; the CSVs
analysis.py  finals, tuning scores, arms and comparisons (`report/stats.py`: intervals, Holm, verdicts)
report.py    the report's files, written from `curves.csv` alone
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from rlhf_lab.errors import UserError
from rlhf_lab.protocol.spec import Protocol, ProtocolError, load

__all__ = ["Protocol", "ProtocolError", "load", "main", "run"]


def run(path: str | Path, out: str | Path | None = None, report_only: bool = False) -> str:
    """Run the protocol declared in `path` (or, `report_only`, recompute its report from the curves
    already written) and write the report to `out` (default: the protocol file's folder); returns the
    report's Markdown."""
    from rlhf_lab.protocol import report, runner

    protocol = load(path)
    out = Path(out) if out is not None else protocol.path.parent
    if report_only:
        return report.write_from_curves(protocol, out)
    return report.write(protocol, runner.run_all(protocol), out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="rlhf-lab-compare", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "protocol", type=Path, help="the protocol file, e.g. experiments/pg_family/protocol.yaml"
    )
    parser.add_argument(
        "--out", type=Path, help="where the report goes (default: the protocol file's folder)"
    )
    parser.add_argument("--report-only", action="store_true", help="recompute the report from curves.csv")
    parser.add_argument(
        "--check", action="store_true", help="check the file and compose every run, run nothing"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.check:
            from rlhf_lab.protocol import runner

            protocol = load(args.protocol)
            runner.check(protocol)
            print(runner.plan(protocol))
            return
        print(run(args.protocol, args.out, args.report_only))
    except UserError as e:  # a bad protocol file, a bad override: the message is the whole story
        raise SystemExit(f"rlhf-lab-compare: {e}") from None
