"""What each arm of a protocol gained from its first evaluation to its last: gold, proxy, length, KL.

    python experiments/gains.py experiments/heavy_tail     # a folder holding a protocol's curves.csv

From the protocol's `curves.csv` (evaluation runs only), per run: the change of gold, of the proxy
(`reward`), of the completions' length (tokens) and the final KL. Per arm: mean ± 95% t over the seeds.
Then the tests, Holm-corrected as one family (`rlhf_lab.report.stats.compare`): each arm's gold and
proxy change against 0, and between the first two arms (a − b, paired by seed), each change. Writes
`gains.md` beside the curves and prints it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rlhf_lab.protocol.analysis import by_run
from rlhf_lab.protocol.curves import read_csv
from rlhf_lab.report import stats

CHANGES = {"gold": "Δ gold", "reward": "Δ proxy", "length": "Δ length"}


def gains(rows: list[dict]) -> dict[str, dict[int, dict]]:
    """arm -> seed -> {Δ gold, Δ proxy, Δ length, final KL} of its evaluation run."""
    out: dict[str, dict[int, dict]] = {}
    for (phase, arm, _, seed), curve in by_run(rows).items():
        if phase == "evaluation":
            first, last = curve[0], curve[-1]
            changes = {label: last[k] - first[k] for k, label in CHANGES.items()}
            out.setdefault(arm, {})[seed] = changes | {"final KL": last["kl"]}
    return out


def _cell(values: list[float]) -> str:
    d = stats.mean_difference(values)
    return f"{d.mean:+.3f} ± {d.half:.3f}"


def report(folder: Path) -> str:
    by_arm = gains(read_csv(folder / "curves.csv"))
    arms, columns = list(by_arm), [*CHANGES.values(), "final KL"]
    lines = ["| arm | seeds | " + " | ".join(columns) + " |", "|---|---:|" + "---:|" * len(columns)]
    for arm in arms:
        runs = list(by_arm[arm].values())
        lines.append(
            f"| {arm} | {len(runs)} | " + " | ".join(_cell([r[c] for r in runs]) for c in columns) + " |"
        )
    family = {}
    for arm in arms:
        for change in ("Δ gold", "Δ proxy"):
            values = [r[change] for r in by_arm[arm].values()]
            family[f"{arm}: {change} against 0"] = (values, [0.0] * len(values))
    a, b = arms[:2]
    seeds = sorted(set(by_arm[a]) & set(by_arm[b]))
    for change in CHANGES.values():
        family[f"{a} − {b}: {change}"] = (
            [by_arm[a][s][change] for s in seeds],
            [by_arm[b][s][change] for s in seeds],
        )
    lines += ["", f"Holm over the {len(family)} tests:", ""]
    lines.append(stats.markdown_table(stats.compare(family), heading="test"))
    text = "\n".join(lines) + "\n"
    (folder / "gains.md").write_text(text)
    return text


if __name__ == "__main__":
    print(report(Path(sys.argv[1])))
