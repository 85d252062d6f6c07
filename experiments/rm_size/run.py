"""Reward-model size against the gold peak (Gao et al. 2022; Stiennon et al. 2020), in one command:

    python experiments/rm_size/run.py            # tune, evaluate, report (a rerun continues from the cache)
    python experiments/rm_size/run.py --report   # the tables again from the committed CSVs

1. **Tuning** (reward models only). Each size's reward model is trained at each learning rate of `LRS`
   on the tuning seed; the rate with the best validation accuracy (agreement with the held-out labels,
   what a practitioner can measure; the gold is not used) is that size's. `rm_tuning.csv`.
2. **Evaluation.** `protocol.yaml` (written from the choice) runs each size at its rate on 5 evaluation
   seeds (`reward_model.seed`, RL's seed tied to it) through `rlhf-lab-compare`: the reward model, then
   RL against it; gold at the end and at its peak, paired by seed, Holm-corrected.
3. **Size against accuracy and the peak.** Each evaluation reward model's validation accuracy and its
   agreement with the gold ordering (`rm_eval.csv`), beside each RL run's gold peak and the KL at it
   (the protocol's `signatures.csv`); then per size mean ± 95% t, and the largest against the smallest
   size, paired by seed, Holm-corrected (`size.md`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from rlhf_lab import api
from rlhf_lab.config.sections import SIZES
from rlhf_lab.protocol import run as run_protocol
from rlhf_lab.protocol.curves import read_csv, write_csv
from rlhf_lab.report import stats

HERE = Path(__file__).resolve().parent
BASE = ["experiment=rm_size", "pipeline=[]", "logger=csv"]
SIZE_NAMES = ("xs", "s", "m", "l")
LRS = ("3e-4", "1e-3", "3e-3")  # the schema's 1e-3, a third and three times it
TUNING_SEED = 100
EVALUATION_SEEDS = (0, 1, 2, 3, 4)


def reward_metrics(*overrides: str) -> dict:
    """The reward stage's metrics for these overrides (trained, or read back from the cache)."""
    cfg = api.compose(*BASE, "stage=reward", *overrides)
    return api.run(
        cfg, run_dir=Path(cfg.paths.runs) / "rm_size" / "_".join(o.split("=")[1] for o in overrides)
    )["metrics"]


def tune() -> dict[str, str]:
    rows = []
    for size in SIZE_NAMES:
        for lr in LRS:
            m = reward_metrics(
                f"reward_model.backbone={size}", f"reward_model.lr={lr}", f"reward_model.seed={TUNING_SEED}"
            )
            rows.append(
                {"size": size, "lr": lr, "seed": TUNING_SEED, "val_accuracy": m["reward/val/accuracy"]}
            )
            print(f"tuning {size} lr={lr}: validation accuracy {rows[-1]['val_accuracy']:.4f}", flush=True)
    write_csv(HERE / "rm_tuning.csv", rows, ("size", "lr", "seed"))
    return chosen_rates(rows)


def chosen_rates(rows: list[dict]) -> dict[str, str]:
    """size -> the rate of its best validation accuracy (the first of a tie, in LRS order)."""
    chosen = {}
    for size in SIZE_NAMES:
        mine = [r for r in rows if r["size"] == size]
        chosen[size] = str(max(mine, key=lambda r: r["val_accuracy"])["lr"])
    return chosen


def write_protocol(chosen: dict[str, str]) -> Path:
    protocol = {
        "question": "Does a larger proxy reward model peak later and higher? (Gao et al. 2022)",
        "base": BASE,
        "arms": {
            size: {"overrides": [f"reward_model.backbone={size}", f"reward_model.lr={chosen[size]}"]}
            for size in SIZE_NAMES
        },
        "seeds": {"key": "reward_model.seed", "tuning": [TUNING_SEED], "evaluation": list(EVALUATION_SEEDS)},
        "metric": "gold",
        "budget": {"axis": "samples", "value": 2560},  # 40 steps x 64 rollouts: the end of every run
        "peak": True,
        "comparisons": {"primary": ["l", "xs"], "secondary": [["s", "xs"], ["m", "s"], ["l", "m"]]},
        "test": "t",
    }
    path = HERE / "protocol.yaml"
    header = (
        "# Written by experiments/rm_size/run.py from rm_tuning.csv (each size's reward-model learning\n"
        "# rate, chosen on validation accuracy at the tuning seed); RL's settings are the same for all.\n"
    )
    path.write_text(header + yaml.safe_dump(protocol, sort_keys=False))
    return path


def evaluate_reward_models(chosen: dict[str, str]) -> None:
    rows = []
    for size in SIZE_NAMES:
        for seed in EVALUATION_SEEDS:
            m = reward_metrics(
                f"reward_model.backbone={size}",
                f"reward_model.lr={chosen[size]}",
                f"reward_model.seed={seed}",
            )
            rows.append(
                {
                    "size": size,
                    "params": int(m["reward/params"]),
                    "seed": seed,
                    "val_accuracy": m["reward/val/accuracy"],
                    "gold_accuracy": m["reward/val/gold_accuracy"],
                }
            )
    write_csv(HERE / "rm_eval.csv", rows, ("size", "params", "seed"))


def report() -> str:
    rm = read_csv(HERE / "rm_eval.csv")
    peaks = [s for s in read_csv(HERE / "signatures.csv") if s["phase"] == "evaluation"]
    by = {(r["size"], r["seed"]): r for r in rm}
    for s in peaks:
        by[(s["arm"], s["seed"])] |= {k: s[k] for k in ("peak_step", "peak_kl", "peak_gold", "end_gold")}
    columns = ("val_accuracy", "gold_accuracy", "peak_gold", "peak_kl", "peak_step", "end_gold")
    lines = [
        "| size | parameters | seeds | " + " | ".join(columns) + " |",
        "|---|---:|---:|" + "---:|" * len(columns),
    ]
    for size in SIZE_NAMES:
        rows = [by[(size, seed)] for seed in EVALUATION_SEEDS]
        cells = []
        for c in columns:
            d = stats.mean_difference([r[c] for r in rows])
            cells.append(f"{d.mean:.3f} ± {d.half:.3f}")
        lines.append(f"| {size} | {rows[0]['params']:,} | {len(rows)} | " + " | ".join(cells) + " |")
    largest, smallest = ([by[(size, s)] for s in EVALUATION_SEEDS] for size in ("l", "xs"))
    comparisons = stats.compare(
        {
            f"l − xs: {c}": ([r[c] for r in largest], [r[c] for r in smallest])
            for c in ("val_accuracy", "gold_accuracy", "peak_gold", "peak_kl")
        }
    )
    lines += ["", stats.markdown_table(comparisons)]
    text = "\n".join(lines) + "\n"
    (HERE / "size.md").write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", action="store_true", help="only the tables, from the committed CSVs")
    if not parser.parse_args().report:
        chosen = tune()
        print(f"chosen learning rates: {chosen}", flush=True)
        run_protocol(write_protocol(chosen))
        evaluate_reward_models(chosen)
    print(report())


if __name__ == "__main__":
    assert set(SIZE_NAMES) == set(SIZES), "the sizes of rlhf_lab.config.sections.SIZES"
    main()
