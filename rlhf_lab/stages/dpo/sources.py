"""Where DPO's pairs come from: one fixed set (offline), or a new set each round (online).

Offline (`dpo.rounds=1`): the preference pairs (the collect artifact, or `data.preferences`), split by
prompt into training and held-out pairs. Online (`dpo.rounds=R >= 2`; Guo et al. 2024, "Direct language
model alignment from online AI feedback"; Xiong et al. 2024): collect's budget of prompts is split over
R rounds; round r samples `collect.samples_per_prompt` completions of its prompts from the current
policy with collect's own code, pairs them, labels them (`dpo.judge`: the labeler group, or the
reward model), and the policy trains on them for its share of the steps. Each round's labeled pairs and
reference log-probs are written to the artifact's folder as they are made, so a resumed run reuses them.
The held-out pairs are those of the first round (the SFT policy's samples, as offline).

The reference log-probs of a set are computed once, in one no-grad pass, and kept with the run
(`reference.safetensors`, `rounds/round_NNN.reference.safetensors`); SimPO has none.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from rlhf_lab.comparisons import label_pairs, sample_chunk
from rlhf_lab.config import Config, LabelerConfig
from rlhf_lab.data.formats import PreferencePair, parse_rows
from rlhf_lab.scorers import Scorer, gold_scorer
from rlhf_lab.seeds import derive_seed
from rlhf_lab.stages.dpo.pairs import PairSet, split_pairs, tokenize_pairs

log = logging.getLogger("rlhf_lab.stages.dpo")
ROUNDS = "rounds"  # the online rounds' pairs and reference log-probs, in the artifact's folder
ReferencePass = Callable[[PairSet], tuple[torch.Tensor, torch.Tensor]]  # pairs -> (chosen, rejected) (N,)


def with_reference(pairs: PairSet, reference: ReferencePass | None, cache: Path) -> PairSet:
    """`pairs` with the reference's log-probs: read from `cache` when a run (this one, or the run it
    resumes) already computed them, else computed in one pass and written there. No reference (SimPO):
    `pairs` as they are."""
    if reference is None:
        return pairs
    if cache.is_file():
        saved = load_file(str(cache))
        if len(saved["chosen"]) == len(pairs):
            return dataclasses.replace(pairs, ref_chosen=saved["chosen"], ref_rejected=saved["rejected"])
    chosen, rejected = reference(pairs)  # (N,) each
    tmp = cache.with_name(cache.name + ".tmp")
    save_file({"chosen": chosen.contiguous(), "rejected": rejected.contiguous()}, str(tmp))
    os.replace(tmp, cache)
    return dataclasses.replace(pairs, ref_chosen=chosen, ref_rejected=rejected)


class PairSource:
    """The pairs of each round and the held-out pairs; the steps of round r are bounds(r)."""

    def __init__(self, rounds: int, max_steps: int):
        self.rounds, self.max_steps = rounds, max_steps
        self.val: PairSet | None = None

    def bounds(self, r: int) -> tuple[int, int]:
        """[first, last) steps of round r: max_steps split as evenly as integers allow."""
        return r * self.max_steps // self.rounds, (r + 1) * self.max_steps // self.rounds

    def round_of(self, step: int) -> int:
        """The round of `step` (the last round from max_steps on: a run stopped after its last step)."""
        return next((r for r in range(self.rounds) if step < self.bounds(r)[1]), self.rounds - 1)

    def train(self, r: int, policy) -> PairSet:
        raise NotImplementedError

    def pair_counts(self) -> dict[str, float]:
        """Training pairs over all rounds, and held-out pairs."""
        raise NotImplementedError


class Offline(PairSource):
    """One set of pairs for the whole run; the reference's log-probs computed on first use (on the
    device the module trains on) or read back from the artifact's folder."""

    def __init__(
        self, train: PairSet, val: PairSet, reference: ReferencePass | None, folder: Path, max_steps: int
    ):
        super().__init__(1, max_steps)
        self.raw, self.reference, self.folder = (train, val), reference, folder
        self.train_pairs: PairSet | None = None

    def train(self, r: int, policy) -> PairSet:
        if self.train_pairs is None:
            train, val = self.raw
            self.train_pairs = with_reference(train, self.reference, self.folder / "reference.safetensors")
            self.val = with_reference(val, self.reference, self.folder / "reference.val.safetensors")
        return self.train_pairs

    def pair_counts(self) -> dict[str, float]:
        return {"pairs": float(len(self.raw[0])), "val_pairs": float(len(self.raw[1]))}


class Online(PairSource):
    """Rounds of pairs sampled from the current policy (module docstring). `judge`: the reward model that
    labels them (dpo.judge=rm), else None for the labeler group."""

    def __init__(
        self,
        cfg: Config,
        prompts: list[str],
        tokenizer,
        folder: Path,
        reference: ReferencePass | None,
        judge: Scorer | None,
    ):
        super().__init__(cfg.dpo.rounds, cfg.dpo.max_steps)
        self.cfg, self.prompts, self.tokenizer, self.folder = cfg, prompts, tokenizer, folder
        self.reference, self.judge = reference, judge
        self.seed = cfg.dpo.seed if cfg.dpo.seed is not None else cfg.seed
        self.stats: dict[str, float] = {}  # the labeling statistics of the last round read
        self._cached: tuple[int, PairSet] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    def pair_counts(self) -> dict[str, float]:
        counts = {"pairs": 0.0, "val_pairs": float(len(self.val or ()))}
        for r in range(self.rounds):
            path = self.folder / f"round_{r:03d}.jsonl"
            if path.is_file():
                rows = parse_rows(
                    [json.loads(x) for x in path.read_text().splitlines()],
                    "preference",
                    str(path),
                    None,
                    "skip",
                )
                counts["pairs"] += len(split_pairs(rows, self.cfg.data.val_size, self.seed)[0])
        return counts

    def round_prompts(self, r: int) -> list[str]:
        n = len(self.prompts)
        return self.prompts[r * n // self.rounds : (r + 1) * n // self.rounds]

    def train(self, r: int, policy) -> PairSet:
        """Round r's training pairs (sampled and labeled now, or read back), with reference log-probs;
        round 0 also fixes the held-out pairs."""
        if self._cached is not None and self._cached[0] == r:
            return self._cached[1]
        if r > 0 and self.val is None:  # a run resumed after round 0: its held-out pairs, read back
            self.train(0, policy)
        train, val = split_pairs(self.labeled(r, policy), self.cfg.data.val_size, self.seed)
        pairs = with_reference(
            tokenize_pairs(train, self.tokenizer, self.cfg.data, f"round {r}"),
            self.reference,
            self.folder / f"round_{r:03d}.reference.safetensors",
        )
        if r == 0:
            self.val = with_reference(
                tokenize_pairs(val, self.tokenizer, self.cfg.data, "round 0, held out"),
                self.reference,
                self.folder / "round_000.val.reference.safetensors",
            )
        self._cached = (r, pairs)
        return pairs

    def labeled(self, r: int, policy) -> list[PreferencePair]:
        """Round r's labeled pairs: `round_NNN.jsonl` if a run already made them, else sampled from
        `policy` and labeled now, then written (its statistics first, the pairs last and atomically:
        the pairs file exists only when the round is complete)."""
        path = self.folder / f"round_{r:03d}.jsonl"
        if not path.is_file():
            rows, stats = self.sample_and_label(r, policy)
            (self.folder / f"round_{r:03d}.stats.json").write_text(json.dumps(stats, indent=2))
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))
            os.replace(tmp, path)
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        self.stats = json.loads((self.folder / f"round_{r:03d}.stats.json").read_text())
        return parse_rows(rows, "preference", str(path), self.tokenizer, self.cfg.data.on_bad_row)

    def labeler_temperature(self) -> float | None:
        """The Bradley-Terry T that round 0 solved (bt, pool with a ceiling), kept for later rounds: the
        same annotators label every round."""
        first = self.folder / "round_000.stats.json"
        return json.loads(first.read_text()).get("bt_temperature") if first.is_file() else None

    @torch.no_grad()
    def sample_and_label(self, r: int, policy) -> tuple[list[dict], dict]:
        """collect's sampling and labeling of round r's prompts, from `policy` as it is now."""
        cfg, prompts = self.cfg, self.round_prompts(r)
        samples = sample_chunk(
            policy,
            self.tokenizer,
            prompts,
            cfg.collect.samples_per_prompt,
            cfg.collect.sampling,
            seed=derive_seed(self.seed, "dpo_round", r),
            gold=gold_scorer(cfg, next(policy.parameters()).device),
            max_prompt_length=cfg.data.max_prompt_length,
        )
        rows, stats = self.label(samples, f"dpo round {r}")
        shown = "  ".join(f"{k} {v:.3g}" for k, v in stats.items() if isinstance(v, float))
        log.info("dpo round %d: %d prompts, %d labeled pairs (%s)", r, len(prompts), len(rows), shown)
        return rows, stats

    def label(self, samples: list[dict], policy: str) -> tuple[list[dict], dict]:
        """comparisons.label_pairs with the run's labeler (its Bradley-Terry T fixed after round 0), or with
        the judge: its scores decide (argmax), and the rows keep the gold scores."""
        cfg = self.cfg
        if self.judge is None:
            labeler, temperature = cfg.labeler, self.labeler_temperature()
            if temperature is not None and labeler.kind in ("bt", "pool"):
                labeler = dataclasses.replace(labeler, temperature=temperature)
            return label_pairs(dataclasses.replace(cfg, labeler=labeler), samples, policy)
        judged = [
            s | {"gold": self.judge.score([s["prompt"]] * len(s["completions"]), s["completions"]).tolist()}
            for s in samples
        ]
        rows, stats = label_pairs(
            dataclasses.replace(cfg, labeler=LabelerConfig(kind="argmax")), judged, policy
        )
        gold = {
            (s["prompt"], c): g
            for s in samples
            for c, g in zip(s["completions"], s["gold"] or [], strict=False)
        }
        for row in rows:
            row |= {
                "labeler": "rm",
                "judge_chosen": row["gold_chosen"],
                "judge_rejected": row["gold_rejected"],
            }
            row["gold_chosen"] = gold.get((row["prompt"], row["chosen"]))
            row["gold_rejected"] = gold.get((row["prompt"], row["rejected"]))
        known = [r for r in rows if r["gold_chosen"] is not None]
        agree = sum(r["gold_chosen"] > r["gold_rejected"] for r in known) / max(1, len(known))
        return rows, {"pairs": float(len(rows)), "gold_agreement": agree}
