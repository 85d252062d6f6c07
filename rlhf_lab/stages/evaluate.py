"""Stage `eval`: the pipeline's summary — SFT against every trained policy and best-of-n, on held-out prompts.

The SFT policy and each policy of `eval.policies` (rl, dpo: their artifacts are built first) sample one
completion per held-out prompt (the same seed for all) and are compared on: gold reward, proxy reward
(the `objective` scorer, unless `eval.proxy=false`), the exact KL to the SFT policy, the win rate
against SFT judged by gold, and perplexity on held-out SFT pairs (what training costs the language
model). Best-of-n rows come from the bon artifact (its proxy and gold scores, its analytic KL).

Writes `summary.json`, `summary.csv`, `summary.md` and `summary.png` (gold and proxy against √KL:
SFT, each trained policy and the best-of-n curve on the same axes, Gao et al. 2022).

With `eval.judged` (a label file of blind comparisons made on the labeling page, `label.judge`), the
summary also reports people as the judge, the measure of Stiennon et al. 2020 and Ouyang et al. 2022: per
comparison the human win rate of A over B with its 95% Wilson interval, beside the gold's and the
proxy's win rates on the same prompts and completions (`rlhf_lab.label.winrate`), in `summary.md`,
`judged.json` and the metrics `eval/judged/*`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from pathlib import Path

import torch

from rlhf_lab import plots
from rlhf_lab.config import Config
from rlhf_lab.data.chat import Prompt
from rlhf_lab.data.lm import LMDataModule, collate
from rlhf_lab.data.prompts import encode_prompts
from rlhf_lab.evaluation import held_out_generator, sample_held_out, summarize
from rlhf_lab.label import winrate
from rlhf_lab.losses import token_nll
from rlhf_lab.rollout import response_logprobs
from rlhf_lab.scorers import gold_key, gold_scorer, needs_reward_stage, objective_key, objective_scorer
from rlhf_lab.seeds import stage_seed
from rlhf_lab.stages.common import Context, data_key, write_table
from rlhf_lab.stages.contract import Derived, Stage, objective_members
from rlhf_lab.tracking import log_stage_metrics

log = logging.getLogger(__name__)
COLUMNS = ["policy", "gold", "reward", "kl", "win_rate", "ppl", "length"]
HEADERS = {
    "policy": "policy",
    "gold": "gold reward",
    "reward": "proxy reward",
    "kl": "KL to SFT (nats)",
    "win_rate": "win rate vs SFT",
    "ppl": "perplexity",
    "length": "length (tokens)",
}


POLICIES = ("rl", "dpo")  # the stages whose policies eval.policies may name


def upstream(cfg: Config) -> list[str]:
    needs = ["sft", *(p for p in cfg.eval.policies if p in POLICIES)]  # others: `check` names them
    if cfg.eval.bon:
        needs.append("bon")
    return needs + (["reward"] if needs_reward_stage(cfg) and cfg.eval.proxy else [])


def derived(cfg: Config) -> dict[str, Derived]:
    """An ensemble objective's members, when the policies get a proxy score."""
    return objective_members(cfg) if cfg.eval.proxy else {}


def check(cfg: Config):
    """'key: message' for eval.policies that name no trained policy, or one twice; for an eval.judged
    that is not a file."""
    policies = list(cfg.eval.policies)
    if any(p not in POLICIES for p in policies) or len(set(policies)) < len(policies):
        yield f"eval.policies: each of {', '.join(POLICIES)} at most once, got {policies}"
    if cfg.eval.judged is not None and not Path(cfg.eval.judged).expanduser().is_file():
        yield f"eval.judged: {cfg.eval.judged}: no such label file"


def policy_name(cfg: Config, stage: str) -> str:
    """The row of a trained policy: its stage and the settings that tell runs apart."""
    if stage == "rl":
        return f"rl ({cfg.algo.name}, β={cfg.algo.kl.beta:g})"
    dpo = cfg.dpo
    rounds = f", {dpo.rounds} rounds" if dpo.rounds > 1 else ""
    return f"dpo ({dpo.loss}, {'τ' if dpo.loss == 'ipo' else 'β'}={dpo.resolved_beta():g}{rounds})"


def key_config(cfg: Config) -> dict:
    settings = dataclasses.asdict(cfg.eval)
    judged = settings.pop("judged")  # keyed by its content, and only when set: other keys stay as they were
    if judged is not None:
        settings["judged_sha256"] = hashlib.sha256(Path(judged).expanduser().read_bytes()).hexdigest()
    return {
        "eval": settings,
        "objective": objective_key(cfg),
        "gold": gold_key(cfg),
        "prompts": data_key(cfg, "eval_prompts"),
        "ppl_data": data_key(cfg, "sft"),
        "seed": stage_seed(cfg, "eval"),
    }


def build(ctx: Context, out: Path) -> dict[str, float]:
    cfg = ctx.cfg
    prompts = ctx.prompts(cfg.data.eval_prompts, "eval_prompts", cfg.eval.num_prompts)
    scorer = objective_scorer(cfg, ctx.inputs, ctx.device) if cfg.eval.proxy else None
    gold = gold_scorer(cfg, ctx.device)
    sft, tokenizer = ctx.load_policy(ctx.inputs["sft"])
    ppl_rows = heldout_sft_rows(ctx, tokenizer)

    rows, sft_gold = [], None
    for stage in ["sft", *cfg.eval.policies]:  # one policy in memory at a time, besides SFT
        name = "sft" if stage == "sft" else policy_name(cfg, stage)
        policy, reference = (sft, None) if stage == "sft" else (ctx.load_policy(ctx.inputs[stage])[0], sft)
        samples = sample_policy(policy, reference, tokenizer, prompts, cfg, ctx.device)
        proxy = scorer.score(prompts, samples.completions) if scorer else None
        golds = gold.score(prompts, samples.completions) if gold else None
        sft_gold = golds if sft_gold is None else sft_gold
        metrics = summarize(samples, proxy, golds, sft_gold)
        metrics["ppl"] = perplexity(policy, ppl_rows, tokenizer)
        rows.append({"policy": name, **metrics})
        log.info("eval %s: %s", name, "  ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    if "bon" in ctx.inputs:
        rows += bon_rows(ctx.inputs["bon"])

    write_summary(rows, out)
    plot_summary(rows, out / "summary.png", cfg.objective.kind)
    metrics = {f"eval/{_slug(r['policy'])}/{k}": v for r in rows for k, v in r.items() if k != "policy"}
    if cfg.eval.judged:
        metrics |= write_judged(cfg.eval.judged, out)
    log_stage_metrics(
        cfg,
        "eval",
        ctx.log_dir("eval"),
        metrics,
        ("eval/summary", COLUMNS, [[r.get(c) for c in COLUMNS] for r in rows]),
    )
    return metrics


def sample_policy(policy, reference, tokenizer, prompts: list[Prompt], cfg: Config, device):
    """One completion per prompt (seed fixed across policies) and its exact KL to `reference`."""
    return sample_held_out(
        policy,
        tokenizer,
        encode_prompts(tokenizer, prompts, cfg.data.max_prompt_length, "eval prompts"),
        cfg.eval.sampling,
        held_out_generator(stage_seed(cfg, "eval"), device),
        None
        if reference is None
        else lambda part, t: response_logprobs(reference, part, t, return_logits=True).logits,
    )


def heldout_sft_rows(ctx: Context, tokenizer) -> list[dict]:
    """The SFT stage's validation pairs (same split, same tokenization), at most `eval.ppl_rows`."""
    cfg = ctx.cfg
    data = LMDataModule(
        cfg.data.sft,
        ctx.default_source(cfg.data.sft, "sft"),
        tokenizer,
        cfg.data,
        1,
        "pairs",
        stage_seed(cfg, "sft"),
    )
    data.setup()
    return data.val_rows[: cfg.eval.ppl_rows]


@torch.no_grad()
def perplexity(model, rows: list[dict], tokenizer, batch_size: int = 64) -> float:
    """exp(mean NLL of the response tokens) of `rows` (prompt tokens carry no loss)."""
    device = next(model.parameters()).device
    total, count = torch.zeros((), dtype=torch.float64), 0
    for start in range(0, len(rows), batch_size):
        batch = collate(rows[start : start + batch_size], tokenizer.pad_token_id)
        logits = model(
            input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
        ).logits
        nll, n = token_nll(logits, batch["labels"].to(device))
        total, count = total + nll.double().cpu(), count + int(n)
    return math.exp(total.item() / max(count, 1))


def bon_rows(bon_dir: Path) -> list[dict]:
    return [
        {"policy": f"best-of-{r['n']}", "gold": r.get("gold"), "reward": r["proxy"], "kl": r["kl"]}
        for r in json.loads((Path(bon_dir) / "bon.json").read_text())
    ]


def _slug(policy: str) -> str:
    return policy.split(" ")[0].replace("best-of-", "bon_n")


def _cell(value) -> str:
    if value is None:
        return "–"
    return value if isinstance(value, str) else f"{value:.3f}"


def write_summary(rows: list[dict], out: Path) -> None:
    """summary.json, summary.csv and summary.md (the table the run prints)."""
    write_table(rows, out, "summary", COLUMNS)
    lines = [
        "| " + " | ".join(HEADERS[c] for c in COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
        *("| " + " | ".join(_cell(r.get(c)) for c in COLUMNS) + " |" for r in rows),
    ]
    (out / "summary.md").write_text("\n".join(lines) + "\n")


def write_judged(labels: str, out: Path) -> dict[str, float]:
    """People as the judge (Stiennon 2020; Ouyang 2022): each blind comparison of the label file, its
    human win rate of A over B with the 95% interval beside the gold's and the proxy's, appended to
    summary.md and written to judged.json; its numbers as metrics (`eval/judged/...`, with the
    comparison's number when the file holds several: `eval/judged/1/...`)."""
    rows = winrate.comparisons_in(Path(labels).expanduser())
    (out / "judged.json").write_text(json.dumps(rows, indent=2))
    title = "People as the judge (blind comparisons; win rate of A over B, ties half, 95% Wilson interval)"
    with open(out / "summary.md", "a") as f:
        f.write(f"\n{title}:\n\n{winrate.to_markdown(rows)}")
    metrics = {}
    for i, row in enumerate(rows, 1):
        metrics |= winrate.metrics(row, "eval/judged" if len(rows) == 1 else f"eval/judged/{i}")
    log.info("eval: people as the judge (%s):\n%s", labels, winrate.to_markdown(rows))
    return metrics


def plot_summary(rows: list[dict], path: Path, proxy_name: str) -> None:
    """Gold (left) and proxy (right) against √KL: SFT and RL as points, best-of-n as a curve."""
    bon = [r for r in rows if r["policy"].startswith("best-of-")]
    points = [r for r in rows if not r["policy"].startswith("best-of-")]
    fig, axes = plots.subplots(1, 2, figsize=(9, 3.6), sharex=True)
    for ax, metric, label in ((axes[0], "gold", "gold reward"), (axes[1], "reward", f"proxy ({proxy_name})")):
        if bon and bon[0].get(metric) is not None:
            x, y = [math.sqrt(r["kl"]) for r in bon], [r[metric] for r in bon]
            ax.plot(x, y, "o-", color="tab:gray", label="best-of-n")
        for i, r in enumerate(points):
            if r.get(metric) is not None:
                ax.plot(math.sqrt(r["kl"]), r[metric], "*", ms=12, color=f"C{i}", label=r["policy"])
        ax.set_xlabel("√KL to SFT  [√nats]")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("SFT vs trained policies vs best-of-n on held-out prompts")
    plots.save(fig, path)


STAGE = Stage(
    "eval",
    version=2,
    upstream=upstream,
    key_config=key_config,
    build=build,
    check=check,
    derived=derived,
)
