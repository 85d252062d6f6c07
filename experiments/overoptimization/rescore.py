"""The final held-out samples of each RL run of a multirun, scored by both golds side by side.

    python experiments/overoptimization/rescore.py /work/lab/runs/multirun/overoptimization

For each job: β, seed, the VADER-only gold and the careful gold of the same 128 completions (the
last evaluation's, `eval_samples.jsonl` of the RL artifact), the share of repeated words, and the
first completion. Writes `golds.csv` next to this script.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from rlhf_lab.report.runs import find_runs
from rlhf_lab.scorers import GoldScorer

HERE = Path(__file__).resolve().parent


def repeated_share(text: str) -> float:
    """Share of a text's words that repeat an earlier word of it."""
    words = text.lower().split()
    return 1 - len(set(words)) / len(words) if words else 0.0


def main(root: Path) -> None:
    vader, careful = GoldScorer("vader"), GoldScorer("careful")
    rows = []
    for run in (r for r in find_runs(root) if r.status == "completed"):
        overrides = run.overrides
        samples = [json.loads(line) for line in open(Path(run.artifacts["rl"]) / "eval_samples.jsonl")]
        prompts, completions = [s["prompt"] for s in samples], [s["completion"] for s in samples]
        rows.append(
            {
                "beta": overrides.get("algo.kl.beta", ""),
                "seed": overrides.get("rl.seed", ""),
                "vader_gold": round(vader.score(prompts, completions).mean().item(), 3),
                "careful_gold": round(careful.score(prompts, completions).mean().item(), 3),
                "repeated_words": round(sum(map(repeated_share, completions)) / len(completions), 3),
                "example": (prompts[0] + completions[0])[:160],
            }
        )
    with open(HERE / "golds.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for row in rows:
        print(row)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
