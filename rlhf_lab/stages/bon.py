"""Stage `bon`: best-of-n reranking, the training-free baseline (Stiennon 2020; Gao et al. 2022).

For each held-out prompt, N = max(bon.n) candidates are sampled once. For each n the stage reports
the expected proxy and gold score of the proxy-best of n candidates, estimated without bias from
all n-subsets of the N samples (Gao 2022, appendix), and the analytic KL(π_bon ‖ π) = log n − (n−1)/n.
Writes `bon.csv`, `bon.json` and `bon.png` (gold and proxy score against √KL). With an ensemble objective
(Coste 2023) the metrics add its members' disagreement over the candidates (`scorers.ensemble_metrics`).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from rlhf_lab import plots
from rlhf_lab.config import Config
from rlhf_lab.losses import best_of_n_kl
from rlhf_lab.rollout import sample_completions
from rlhf_lab.scorers import (
    ensemble_metrics,
    gold_key,
    gold_scorer,
    needs_reward_stage,
    objective_key,
    objective_scorer,
    scores_and_members,
)
from rlhf_lab.seeds import derive_seed, stage_seed, without_seed
from rlhf_lab.stages.common import Context, data_key, write_table
from rlhf_lab.stages.contract import Stage, objective_members
from rlhf_lab.tensors import repeat_each
from rlhf_lab.tracking import log_stage_metrics

log = logging.getLogger(__name__)


def upstream(cfg: Config) -> list[str]:
    return ([] if cfg.bon.policy else ["sft"]) + (["reward"] if needs_reward_stage(cfg) else [])


def key_config(cfg: Config) -> dict:
    return {
        "bon": without_seed(cfg.bon),
        "objective": objective_key(cfg),
        "gold": gold_key(cfg),
        "prompts": data_key(cfg, "eval_prompts"),
        "seed": stage_seed(cfg, "bon"),
    }


def best_of_n_expectation(proxy: torch.Tensor, target: torch.Tensor, n: int) -> torch.Tensor:
    """E[target of the proxy-argmax among n of the N candidates drawn without replacement], (B,).

    proxy, target (B, N). Sorting by proxy, the i-th smallest (1-based) is the best of a random
    n-subset with probability C(i−1, n−1) / C(N, n); averaging over all subsets beats taking the
    first n samples in variance (Gao et al. 2022, "Scaling laws for reward model overoptimization").
    """
    b, big_n = proxy.shape
    if not 1 <= n <= big_n:
        raise ValueError(f"n={n} must be between 1 and the {big_n} candidates sampled")
    order = proxy.argsort(dim=1)  # (B, N) ascending
    ranked = target.gather(1, order)  # (B, N)
    i = torch.arange(1, big_n + 1, dtype=torch.float64)  # (N,)
    log_w = _log_comb(i - 1, n - 1) - _log_comb(torch.tensor(float(big_n)), n)  # (N,)
    weights = torch.where(i >= n, log_w.exp(), torch.zeros_like(log_w))  # (N,) sums to 1
    return (ranked.double() * weights).sum(dim=1).float()  # (B,)


def _log_comb(a: torch.Tensor, k: int) -> torch.Tensor:
    """log C(a, k), -inf where a < k."""
    a = a.double()
    value = torch.lgamma(a + 1) - math.lgamma(k + 1) - torch.lgamma((a - k).clamp(min=0) + 1)
    return torch.where(a >= k, value, torch.full_like(a, -math.inf))


def build(ctx: Context, out: Path) -> dict[str, float]:
    cfg = ctx.cfg
    ns, big_n = sorted(set(cfg.bon.n)), max(cfg.bon.n)
    prompts = ctx.prompts(cfg.data.eval_prompts, "eval_prompts", cfg.bon.num_prompts)
    model, tokenizer = ctx.load_policy(cfg.bon.policy or ctx.inputs["sft"])
    seed = derive_seed(stage_seed(cfg, "bon"), "best_of_n")
    completions = sample_completions(
        model, tokenizer, prompts, big_n, cfg.bon.sampling, seed, cfg.data.max_prompt_length
    )
    repeated = repeat_each(prompts, big_n)  # prompt i at rows i*N .. i*N+N-1
    del model
    scorer = objective_scorer(cfg, ctx.inputs, ctx.device)
    proxy, members = scores_and_members(scorer, repeated, completions)  # (B*N,), (M, B*N) or None
    gold = gold_scorer(cfg, ctx.device)
    gold = gold.score(repeated, completions).view(len(prompts), big_n) if gold else None  # (B, N)
    proxy = proxy.view(len(prompts), big_n)  # (B, N)

    table = []
    for n in ns:
        row = {"n": n, "kl": best_of_n_kl(n), "proxy": best_of_n_expectation(proxy, proxy, n).mean().item()}
        if gold is not None:
            row["gold"] = best_of_n_expectation(proxy, gold, n).mean().item()
        table.append(row)
    write_table(table, out, "bon")
    plot(table, out / "bon.png", cfg.objective.kind)
    metrics = {f"bon/n{r['n']}/{k}": v for r in table for k, v in r.items() if k != "n"}
    if members is not None:  # an ensemble: its members' disagreement and means over every candidate
        metrics |= {f"bon/{k}": v for k, v in ensemble_metrics(members).items()}
    columns = list(table[0])
    log_stage_metrics(
        cfg,
        "bon",
        ctx.log_dir("bon"),
        metrics,
        ("bon/table", columns, [[r[c] for c in columns] for r in table]),
    )
    for r in table:
        log.info(
            "best-of-%-3d KL %.2f  proxy %+.3f  gold %s",
            r["n"],
            r["kl"],
            r["proxy"],
            f"{r['gold']:+.3f}" if "gold" in r else "-",
        )
    return metrics


def plot(table: list[dict], path: Path, proxy_name: str) -> None:
    """Gold and proxy score of best-of-n against √KL, the axes of Gao et al. 2022."""
    x = [math.sqrt(r["kl"]) for r in table]
    fig, ax = plots.subplots(figsize=(5, 3.5))
    ax.plot(x, [r["proxy"] for r in table], "o-", label=f"proxy ({proxy_name})")
    if "gold" in table[0]:
        ax.plot(x, [r["gold"] for r in table], "s-", label="gold")
    for xi, r in zip(x, table, strict=True):
        ax.annotate(f"n={r['n']}", (xi, r["proxy"]), textcoords="offset points", xytext=(3, 4), fontsize=7)
    ax.set_xlabel("√KL(best-of-n ‖ policy)  [√nats]")
    ax.set_ylabel("score")
    ax.set_title("Best-of-n")
    ax.grid(alpha=0.3)
    ax.legend()
    plots.save(fig, path)


STAGE = Stage(
    "bon", version=2, upstream=upstream, key_config=key_config, build=build, derived=objective_members
)
