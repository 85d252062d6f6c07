"""How much of each proxy's gain is length (Singhal et al. 2023), for the runs of `protocol.yaml`.

    python experiments/length_bias/length.py   # after rlhf-lab-compare experiments/length_bias/protocol.yaml

For each evaluation run: its reward model scores the held-out samples of RL's first and last evaluations
(`eval_history.jsonl`). On the first (the SFT policy's samples): the correlation of the proxy with the
completion's words, and the proxy's least-squares slope per word. The proxy's gain explained by length
is that slope times the change in mean words from the first evaluation to the last; `length_share` is
that over the proxy's actual gain. The gold's own correlation with words on the same samples is given
beside (the reader gold prefers shorter completions). Writes `length.csv` (one row per run) and
`length.md` (per arm, mean ± 95% t) beside this script.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from rlhf_lab import api
from rlhf_lab.evaluation import EVAL_HISTORY
from rlhf_lab.pipeline import artifact_dir
from rlhf_lab.protocol import runner
from rlhf_lab.protocol.curves import write_csv
from rlhf_lab.protocol.spec import load
from rlhf_lab.report import stats
from rlhf_lab.scorers import RewardModelScorer, gold_scorer, word_count

HERE = Path(__file__).resolve().parent
COLUMNS = (
    "proxy_words_corr",
    "gold_words_corr",
    "slope_per_word",
    "words_change",
    "proxy_gain",
    "length_share",
)


def correlation(x: torch.Tensor, y: torch.Tensor) -> float:
    return torch.corrcoef(torch.stack([x, y]))[0, 1].item()


def measure(overrides: tuple[str, ...]) -> dict:
    cfg = api.compose(*overrides)
    proxy = RewardModelScorer(artifact_dir(cfg, "reward"), cfg.model)
    gold = gold_scorer(cfg)
    rows = [json.loads(line) for line in (artifact_dir(cfg, "rl") / EVAL_HISTORY).read_text().splitlines()]
    first, last = ([r for r in rows if r["step"] == step] for step in (rows[0]["step"], rows[-1]["step"]))
    scores, words = {}, {}
    for name, samples in (("first", first), ("last", last)):
        prompts, completions = [s["prompt"] for s in samples], [s["completion"] for s in samples]
        scores[name] = proxy.score(prompts, completions).double()  # (B,)
        words[name] = torch.tensor([word_count(c) for c in completions], dtype=torch.float64)  # (B,)
        if name == "first":
            gold_first = gold.score(prompts, completions).double()  # (B,)
    w, s = words["first"], scores["first"]
    slope = (((w - w.mean()) * (s - s.mean())).sum() / ((w - w.mean()) ** 2).sum()).item()
    words_change = (words["last"].mean() - w.mean()).item()
    gain = (scores["last"].mean() - s.mean()).item()
    return {
        "proxy_words_corr": correlation(w, s),
        "gold_words_corr": correlation(w, gold_first),
        "slope_per_word": slope,
        "words_change": words_change,
        "proxy_gain": gain,
        "length_share": slope * words_change / gain if gain else float("nan"),
    }


def main() -> None:
    protocol = load(HERE / "protocol.yaml")
    rows = []
    for run in runner.evaluation_runs(protocol, {arm: "default" for arm in protocol.arms}):
        rows.append({"arm": run.arm, "seed": run.seed} | measure(run.overrides))
        print(rows[-1], flush=True)
    write_csv(HERE / "length.csv", rows, ("arm", "seed"))
    lines = ["| arm | seeds | " + " | ".join(COLUMNS) + " |", "|---|---:|" + "---:|" * len(COLUMNS)]
    for arm in protocol.arms:
        mine = [r for r in rows if r["arm"] == arm]
        cells = []
        for c in COLUMNS:
            d = stats.mean_difference([r[c] for r in mine])
            cells.append(f"{d.mean:+.3f} ± {d.half:.3f}")
        lines.append(f"| {arm} | {len(mine)} | " + " | ".join(cells) + " |")
    (HERE / "length.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
