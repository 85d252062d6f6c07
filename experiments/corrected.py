"""Issue 25's rule applied to the first comparative write-ups, from their committed CSVs alone: every
comparison a write-up states, paired by seed, with Holm's correction over that write-up's family of
comparisons (`rlhf_lab.report.stats.compare`: paired t-test, "separated after correction" where Holm's
p ≤ 0.05). Nothing is rerun.

    python experiments/corrected.py            # every table of the "Under correction (issue 25)" sections

dpo_vs_ppo keeps no per-seed results: its p-values come from the printed mean ± 95% t-interval and n
(t = mean · t_0.975,n−1 / half-width), to the printed digits. beta_sweep's equal-KL differences are the
per-seed values of frontier.md (3 decimals): the curves they were interpolated on are not committed.
"""

from __future__ import annotations

import csv
import math
import re
import statistics
from pathlib import Path

from rlhf_lab.report.stats import compare, holm, t_quantile, t_two_sided_p, verdict

HERE = Path(__file__).resolve().parent
HEADER = "| comparison | Δ mean ± 95% t | n | p | Holm p | verdict |\n|---|---|---:|---:|---:|---|"


def rows(path: str) -> list[dict[str, str]]:
    with open(HERE / path) as f:
        return list(csv.DictReader(f))


def per_seed(data, column: str, seed: str = "rl.seed", **match) -> dict[int, float]:
    """seed -> float(column) for the rows whose fields equal `match`."""
    return {int(r[seed]): float(r[column]) for r in data if all(r[k] == str(v) for k, v in match.items())}


def const(values: dict[int, float], c: float = 0.0) -> dict[int, float]:
    """The constant c at each seed of `values`: a one-sample comparison as a paired one."""
    return dict.fromkeys(values, c)


def line(name, mean, half, n, p, p_holm, words) -> str:
    delta = f"{mean:+.3f} ± {half:.3f}".replace("-", "−")
    return f"| {name} | {delta} | {n} | {p:.2g} | {p_holm:.2g} | {words} |"


def show(title: str, family: dict) -> None:
    results = compare(family)
    print(f"\n### {title}: family of {len(results)}\n\n{HEADER}")
    for c in results:
        d = c.difference
        print(line(c.name, d.mean, d.half, d.n, c.p, c.p_holm, c.verdict))


def pg_family() -> None:
    data = rows("pg_family/runs.csv")
    arms = ["ppo_critic", "ppo", "reinforce_pp", "dapo", "reinforce", "dr_grpo", "gspo"]
    gold = {a: per_seed(data, "rl/eval/gold", configuration=f"algo={a}") for a in [*arms, "rloo", "grpo"]}
    family = {f"{a} − rloo": (gold[a], gold["rloo"]) for a in [*arms, "grpo"]}
    family |= {f"{a} − grpo": (gold[a], gold["grpo"]) for a in arms}  # rloo − grpo is grpo − rloo
    show("pg_family (gold at 24 steps × 64 completions)", family)
    full = per_seed(rows("lora_rank/runs.csv"), "rl/eval/gold", configuration="experiment=lora_rank")
    show(
        "pg_family, outside its family (uncorrected): RLOO at its own 40 steps (lora_rank's full row)",
        {"ppo_critic (24 steps) − rloo (40 steps)": (gold["ppo_critic"], full)},
    )


def ppo_details() -> None:
    data = rows("ppo_details/runs.csv")
    base = "experiment=ppo_details"
    variants = sorted({r["configuration"] for r in data} - {base})
    family = {}
    for column, label in [("rl/eval/gold", "gold"), ("rl/eval/kl", "KL")]:
        on = per_seed(data, column, configuration=base)
        for v in variants:
            family[f"{label}: {v.split('/')[1]} − all on"] = (per_seed(data, column, configuration=v), on)
    time = "rl/train/time/total"
    family["RL time (s): value_head − all on"] = (
        per_seed(data, time, configuration=f"{base}/value_head"),
        per_seed(data, time, configuration=base),
    )
    show("ppo_details (16 steps × 48 completions)", family)


def lora_rank() -> None:
    data, sweep = rows("lora_rank/runs.csv"), rows("lora_rank/lr_runs.csv")
    full = per_seed(data, "rl/eval/gold", configuration="experiment=lora_rank")
    family = {
        f"r {r} at 3e-3 − full at 3e-4": (
            per_seed(data, "rl/eval/gold", configuration=f"experiment=lora_rank/r{r}"),
            full,
        )
        for r in (4, 16, 64)
    }
    for lr in ("0.0006", "0.001", "0.002"):
        name = f"r 16 at {float(lr):.0e} − full at 3e-4".replace("e-0", "e-")
        family[name] = (per_seed(sweep, "rl/eval/gold", configuration=f"rl.lr={lr}"), full)
    show("lora_rank (gold at 40 RLOO steps)", family)


def dpo_vs_ppo() -> None:
    """From paired.md's printed mean ± half-width (n seeds): the per-seed values are not committed."""
    names, stats = [], []  # (mean, half-width, n, p) per pair
    for text in (HERE / "dpo_vs_ppo/paired.md").read_text().splitlines()[2:]:
        beta_d, kl_d, beta_p, kl_p, n, diff = (cell.strip() for cell in text.strip("|").split("|"))
        mean, half = (float(x) for x in diff.split("±"))
        t = mean * t_quantile(0.975, int(n) - 1) / half
        names.append(f"PPO β {beta_p} (KL {kl_p}) − DPO β {beta_d} (KL {kl_d})")
        stats.append((mean, half, int(n), t_two_sided_p(t, int(n) - 1)))
    print(f"\n### dpo_vs_ppo (from the printed intervals): family of {len(names)}\n\n{HEADER}")
    for name, (mean, half, n, p), p_holm in zip(names, stats, holm([x[3] for x in stats]), strict=True):
        print(line(name, mean, half, n, p, p_holm, verdict(p_holm)))


def beta_sweep() -> None:
    data = rows("beta_sweep/runs.csv")
    kl = {b: per_seed(data, "rl/eval/kl", **{"algo.kl.beta": b}) for b in ("0", "0.02", "0.1")}
    gold = {b: per_seed(data, "rl/eval/gold", **{"algo.kl.beta": b}) for b in ("0", "0.02", "0.1")}
    equal_kl: dict[str, dict[int, float]] = {"0.02": {}, "0.1": {}}
    for text in (HERE / "beta_sweep/frontier.md").read_text().splitlines():
        if m := re.match(r"\| (0\.\d+) \| (\d) \|.*\| ([+-]\d\.\d+) \|$", text):
            equal_kl[m[1]][int(m[2])] = float(m[3])
    family = {
        f"gold at equal KL: β {b} − β 0 (frontier.md)": (equal_kl[b], const(equal_kl[b]))
        for b in ("0.1", "0.02")
    }
    family["final KL: β 0 − β 0.02"] = (kl["0"], kl["0.02"])
    family["final KL: β 0.02 − β 0.1"] = (kl["0.02"], kl["0.1"])
    family["final gold: β 0.02 − β 0"] = (gold["0.02"], gold["0"])
    family["final gold: β 0.02 − β 0.1"] = (gold["0.02"], gold["0.1"])
    show("beta_sweep (RLOO, 120 steps)", family)


def label_noise() -> None:
    data = rows("label_noise/label_noise.csv")

    def get(labeler: str, column: str) -> dict[int, float]:
        return per_seed(data, column, seed="seed", labeler=labeler)

    argmax, bt8, flip = "argmax", "bt ceiling 0.8", "flip ε 0.2"
    agreement = "gold_agreement"
    family = {
        "gold agreement: bt 0.8 − argmax": (get(bt8, agreement), get(argmax, agreement)),
        "gold agreement: flip − argmax": (get(flip, agreement), get(argmax, agreement)),
        "gold agreement: flip − bt 0.8": (get(flip, agreement), get(bt8, agreement)),
    }
    for labeler in (argmax, bt8, flip, "bt ceiling 0.7", "pool"):
        family[f"accuracy − ceiling: {labeler}"] = (get(labeler, "accuracy"), get(labeler, "ceiling"))
    for labeler in (argmax, bt8, flip, "bt ceiling 0.7", "pool"):
        family[f"gold fall, peak − end: {labeler}"] = (get(labeler, "peak_gold"), get(labeler, "end_gold"))
    family["peak gold: argmax − bt 0.8"] = (get(argmax, "peak_gold"), get(bt8, "peak_gold"))
    family["peak gold: bt 0.8 − flip"] = (get(bt8, "peak_gold"), get(flip, "peak_gold"))
    family["peak step: argmax − bt 0.8"] = (get(argmax, "peak_step"), get(bt8, "peak_step"))
    show("label_noise (RLOO at β 0, 100 steps)", family)


def rm_data_size() -> None:
    data = rows("rm_data_size/rm_data_size.csv")

    def get(prompts: int, column: str) -> dict[int, float]:
        return per_seed(data, column, seed="seed", prompts=prompts)

    slopes = {}  # accuracy points per doubling of the pairs, a least-squares slope per seed
    for seed in sorted({int(r["seed"]) for r in data}):
        mine = [r for r in data if int(r["seed"]) == seed]
        x = [math.log2(float(r["pairs"])) for r in mine]
        slopes[seed] = 100 * statistics.linear_regression(x, [float(r["accuracy"]) for r in mine]).slope
    family = {
        "accuracy points per doubling − 0": (slopes, const(slopes)),
        "accuracy points per doubling − Stiennon's 1.1": (slopes, const(slopes, 1.1)),
        "accuracy − ceiling: 2,000 − 250 prompts": (
            get(2000, "accuracy_minus_ceiling"),
            get(250, "accuracy_minus_ceiling"),
        ),
        "gold agreement: 2,000 − 250 prompts": (get(2000, "gold_agreement"), get(250, "gold_agreement")),
        "gold fall, peak − end, 500 prompts": (get(500, "peak_gold"), get(500, "end_gold")),
        "proxy, end − peak, 500 prompts": (get(500, "end_proxy"), get(500, "peak_proxy")),
    }
    for size in (500, 1000, 2000):
        family[f"peak gold: {size:,} − 250 prompts"] = (get(size, "peak_gold"), get(250, "peak_gold"))
    show("rm_data_size", family)


if __name__ == "__main__":
    for write_up in (pg_family, ppo_details, lora_rank, dpo_vs_ppo, beta_sweep, label_noise, rm_data_size):
        write_up()
