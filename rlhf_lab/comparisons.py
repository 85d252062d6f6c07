"""K completions per prompt, gold-scored, paired and labeled: the collect stage's work, which online DPO
repeats every round from the policy it trains.

1. `sample_chunk`: K completions of each prompt, with their gold scores when the world has a gold;
2. `comparisons_of`: the candidate pairs of each prompt's completions (all K(K-1)/2, InstructGPT, or
   the adjacent ones), identical or empty completions left out;
3. `label_pairs`: each pair labeled by the configured labeler; for `bt` (and `pool`, its annotators' base
   T) with a `ceiling`, T is solved from the gold gaps. Rows in TRL's preference format. A labeler with a
   `labeler.length_bonus` judges gold + length_bonus · words; T is still solved from the gold gaps, so
   that a biased labeler differs from the unbiased one by its taste for length alone.
"""

from __future__ import annotations

import itertools

import torch

from rlhf_lab.config import Config, ConfigError, SamplingConfig
from rlhf_lab.data.chat import Prompt, as_completion, display
from rlhf_lab.labelers import Comparison, PoolLabeler, bt_ceiling, make_labeler, temperature_for_ceiling
from rlhf_lab.rollout import sample_completions
from rlhf_lab.scorers import Scorer, word_count
from rlhf_lab.seeds import stage_seed
from rlhf_lab.tensors import repeat_each


def sample_chunk(
    model,
    tokenizer,
    prompts: list[Prompt],
    k: int,
    sampling: SamplingConfig,
    seed: int,
    gold: Scorer | None,
    max_prompt_length: int,
) -> list[dict]:
    completions = sample_completions(model, tokenizer, prompts, k, sampling, seed, max_prompt_length)
    repeated = repeat_each(prompts, k)  # (N*K,) prompt i at rows i*K .. i*K+K-1
    scores = gold.score(repeated, completions).view(len(prompts), k).tolist() if gold else None
    return [
        {"prompt": p, "completions": completions[i * k : (i + 1) * k], "gold": scores[i] if gold else None}
        for i, p in enumerate(prompts)
    ]


def candidate_pairs(k: int, mode: str) -> list[tuple[int, int]]:
    """Index pairs among K completions: all K(K-1)/2 (InstructGPT) or the K-1 adjacent ones."""
    return list(itertools.combinations(range(k), 2)) if mode == "all" else [(i, i + 1) for i in range(k - 1)]


def comparisons_of(samples: list[dict], mode: str) -> list[tuple[int, Comparison]]:
    """(group, comparison) for each candidate pair of each prompt's samples; group = the sample's index.
    A conversational prompt is compared (and looked up in a human-label file) as its plain text."""
    out = []
    for group, s in enumerate(samples):
        for i, j in candidate_pairs(len(s["completions"]), mode):
            a, b = s["completions"][i], s["completions"][j]
            if a != b and a.strip() and b.strip():  # identical or empty samples make no useful pair
                gold_a, gold_b = (s["gold"][i], s["gold"][j]) if s["gold"] else (None, None)
                out.append((group, Comparison(display(s["prompt"]), a, b, gold_a, gold_b)))
    return out


def bt_temperature(cfg: Config, gaps: torch.Tensor | None) -> float | None:
    """labeler.temperature, or the T whose Bradley–Terry ceiling on these gold gaps is labeler.ceiling."""
    lab = cfg.labeler
    if lab.kind not in ("bt", "pool") or lab.temperature is not None:
        return lab.temperature
    try:
        return temperature_for_ceiling(gaps, lab.ceiling)
    except ValueError as err:  # every gold gap zero: no temperature tells a pair apart
        raise ConfigError(
            f"labeler.ceiling={lab.ceiling}: {err}; set labeler.temperature (every pair is then a coin "
            "flip) or use a gold that tells the samples apart (e.g. gold=vader)"
        ) from err


def label_pairs(cfg: Config, samples: list[dict], policy: str) -> tuple[list[dict], dict]:
    """Label every candidate pair; rows in TRL's preference format plus gold, labeler, policy, group."""
    pairs = comparisons_of(samples, cfg.collect.pairs)
    gaps = torch.tensor([c.gold_a - c.gold_b for _, c in pairs]) if cfg.gold else None
    temperature = bt_temperature(cfg, gaps)
    lab = cfg.labeler
    labeler = make_labeler(
        lab.kind,
        temperature=temperature or 1.0,
        epsilon=lab.epsilon,
        path=lab.path,
        annotators=lab.annotators,
        seed=stage_seed(cfg, "collect"),
        length_bonus=lab.length_bonus,
    )
    comparisons = [c for _, c in pairs]
    labels = labeler.label(comparisons)
    annotators = labeler.annotators_of(comparisons) if isinstance(labeler, PoolLabeler) else None
    rows = []
    for n, ((group, c), label) in enumerate(zip(pairs, labels, strict=True)):
        if label is None:
            continue
        (chosen, g_c), (rejected, g_r) = ((c.a, c.gold_a), (c.b, c.gold_b))[:: 1 if label else -1]
        prompt = samples[group]["prompt"]  # a string, or a conversation: then the completions are replies
        rows.append(
            {
                "prompt": prompt,
                "chosen": as_completion(prompt, chosen),
                "rejected": as_completion(prompt, rejected),
                "gold_chosen": g_c,
                "gold_rejected": g_r,
                "labeler": lab.kind,
                "policy": policy,
                "group": group,
            }
            | ({"annotator": annotators[n]} if annotators else {})
        )
    stats = {"prompts": len(samples), "pairs": len(rows), "unlabelled": len(pairs) - len(rows)}
    if cfg.gold:
        gold = torch.tensor([g for s in samples for g in s["gold"]])
        agree = sum(r["gold_chosen"] > r["gold_rejected"] for r in rows) / max(1, len(rows))
        stats |= {"gold_mean": gold.mean().item(), "gold_std": gold.std().item(), "gold_agreement": agree}
    if lab.length_bonus:
        stats |= {"longer_chosen": longer_chosen(comparisons, labels)}
    if isinstance(labeler, PoolLabeler):
        stats |= pool_stats(labeler, comparisons, rows)
    elif temperature is not None and gaps is not None:
        stats |= {
            "bt_temperature": temperature,
            "bt_ceiling": bt_ceiling(gaps, torch.zeros_like(gaps), temperature),
        }
    return rows, stats


def longer_chosen(comparisons: list[Comparison], labels: list[int | None]) -> float:
    """The share of the labeled pairs of unequal length (scorers.word_count) whose chosen completion is
    the longer: about 0.5 for labels blind to length, more for a labeler that prefers long answers."""
    diffs = [
        (word_count(c.a) - word_count(c.b)) * (1 if label else -1)
        for c, label in zip(comparisons, labels, strict=True)
        if label is not None
    ]
    unequal = [d for d in diffs if d]
    return sum(d > 0 for d in unequal) / max(1, len(unequal))


def pool_stats(labeler: PoolLabeler, comparisons: list[Comparison], rows: list[dict]) -> dict[str, float]:
    """The pool's base temperature and ceiling (E[max(p, 1 − p)] of the pair's label probability over
    the annotators), and per annotator its share of the pairs and its agreement with gold."""
    p = torch.tensor([labeler.probability(c, i) for i, c in enumerate(comparisons)], dtype=torch.float64)
    stats = {"pool_temperature": labeler.temperature, "label_ceiling": torch.maximum(p, 1 - p).mean().item()}
    for a in labeler.annotators:
        mine = [r for r in rows if r["annotator"] == a.name]
        untied = [r for r in mine if r["gold_chosen"] != r["gold_rejected"]]
        stats[f"pool/{a.name}/share"] = len(mine) / max(1, len(rows))
        stats[f"pool/{a.name}/gold_agreement"] = sum(
            r["gold_chosen"] > r["gold_rejected"] for r in untied
        ) / max(1, len(untied))
    return stats
