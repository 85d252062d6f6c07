"""Labelers: which completion of a pair is preferred, simulated from gold scores or read from human labels.

Every random draw is a pure function of (seed, labeler, prompt, the two completions) through a stable hash,
never a shared RNG stream: a list gets the same labels in any order, in any batch split, and after an
interrupted run. The draw is taken on the pair in sorted order, so (a, b) and (b, a) get opposite labels.

`PoolLabeler` simulates annotator variability (AlpacaFarm, Dubois 2023): a pool of annotators, each with
its own Bradley–Terry temperature, length bias and flip rate; each pair is labeled by one of them, drawn
by weight from the same kind of hash, and `annotators_of()` says which.

Every simulated labeler takes a `length_bonus` (`labeler.length_bonus`; Singhal et al. 2023, "A long way
to go"): it judges a completion by its utility, gold + length_bonus · words (`scorers.word_count`), in
place of its gold. 0 (the default) is the gold alone, exactly.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from rlhf_lab.config import AnnotatorConfig, ConfigError
from rlhf_lab.data.sources import DataError
from rlhf_lab.label.human_labels import read_labels
from rlhf_lab.scorers import word_count

KINDS = ("bt", "argmax", "flip", "pool", "file")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Comparison:
    """Two completions of one prompt, with their gold scores when a gold scorer exists."""

    prompt: str
    a: str
    b: str
    gold_a: float | None = None
    gold_b: float | None = None


@runtime_checkable
class Labeler(Protocol):
    name: str

    def label(self, comparisons: Sequence[Comparison]) -> list[int | None]:
        """1 if a is preferred, 0 if b is preferred, None if there is no label (a tie for argmax, a pair
        missing from a human-label file): such pairs are dropped by the caller."""
        ...


# ------------------------------------------------------------------------------------ randomness
def uniform(seed: int, domain: str, prompt: str, first: str, second: str) -> float:
    """A float in [0, 1) from a 64-bit blake2b hash of the (length-prefixed) arguments."""
    h = hashlib.blake2b(digest_size=8)
    for part in (str(seed), domain, prompt, first, second):
        data = part.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return (int.from_bytes(h.digest(), "little") >> 11) * 2.0**-53


def _pair_draw(seed: int, domain: str, c: Comparison) -> tuple[float, bool]:
    """The draw for the unordered pair {a, b} of `c.prompt`, and whether `a` comes first in sorted order."""
    a_first = c.a <= c.b
    first, second = (c.a, c.b) if a_first else (c.b, c.a)
    return uniform(seed, domain, c.prompt, first, second), a_first


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def _gold(c: Comparison, i: int, name: str) -> tuple[float, float]:
    if c.gold_a is None or c.gold_b is None:
        raise ConfigError(
            f"labeler '{name}' needs gold scores (a gold scorer), but comparison {i} has none; "
            "use labeler=file for data without a gold scorer"
        )
    ga, gb = float(c.gold_a), float(c.gold_b)
    if not (math.isfinite(ga) and math.isfinite(gb)):
        raise DataError(f"labeler '{name}': comparison {i} has a non-finite gold score ({ga}, {gb})")
    return ga, gb


def _utility(c: Comparison, i: int, name: str, length_bonus: float) -> tuple[float, float]:
    """The labeler's utilities of a and b: gold + length_bonus · words; the gold scores themselves at 0."""
    ga, gb = _gold(c, i, name)
    if length_bonus:
        ga += length_bonus * word_count(c.a)
        gb += length_bonus * word_count(c.b)
    return ga, gb


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_temperature(value: float, key: str) -> None:
    if not (_is_number(value) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{key} must be a finite number > 0, got {value!r}")


def _check_epsilon(value: float, key: str) -> None:
    if not (_is_number(value) and 0 <= value <= 1):
        raise ConfigError(f"{key} must be a probability in [0, 1], got {value!r}")


def _check_length_bonus(value: float, key: str = "labeler.length_bonus") -> float:
    if not (_is_number(value) and math.isfinite(value)):
        raise ConfigError(f"{key} must be a finite number (gold units per word), got {value!r}")
    return float(value)


# -------------------------------------------------------------------------------- gold labelers
class BradleyTerryLabeler:
    """P(a ≻ b) = σ((u_a − u_b)/T), T > 0 (Christiano 2017; the setting of Gao et al. 2022 with a known
    gold reward); u = g + length_bonus · words, the gold g itself by default."""

    name = "bt"

    def __init__(self, temperature: float, seed: int, length_bonus: float = 0.0):
        _check_temperature(temperature, "temperature")
        self.temperature = float(temperature)
        self.seed = seed
        self.length_bonus = _check_length_bonus(length_bonus)

    def label(self, comparisons: Sequence[Comparison]) -> list[int | None]:
        return [self._one(c, i) for i, c in enumerate(comparisons)]

    def _one(self, c: Comparison, i: int) -> int:
        ga, gb = _utility(c, i, self.name, self.length_bonus)
        u, a_first = _pair_draw(self.seed, self.name, c)
        gap_first = (ga - gb) if a_first else (gb - ga)
        first_wins = u < _sigmoid(gap_first / self.temperature)
        return int(first_wins == a_first)


class ArgmaxLabeler:
    """The noiseless labeler: the completion with the higher gold score (utility, with a length_bonus);
    ties → None."""

    name = "argmax"

    def __init__(self, length_bonus: float = 0.0):
        self.length_bonus = _check_length_bonus(length_bonus)

    def label(self, comparisons: Sequence[Comparison]) -> list[int | None]:
        return [_argmax(c, i, self.name, self.length_bonus) for i, c in enumerate(comparisons)]


def _argmax(c: Comparison, i: int, name: str, length_bonus: float = 0.0) -> int | None:
    ga, gb = _utility(c, i, name, length_bonus)
    return None if ga == gb else int(ga > gb)


class FlipLabeler:
    """The argmax label, flipped with probability epsilon; ties stay None."""

    name = "flip"

    def __init__(self, epsilon: float, seed: int, length_bonus: float = 0.0):
        _check_epsilon(epsilon, "epsilon")
        self.epsilon = float(epsilon)
        self.seed = seed
        self.length_bonus = _check_length_bonus(length_bonus)

    def label(self, comparisons: Sequence[Comparison]) -> list[int | None]:
        return [self._one(c, i) for i, c in enumerate(comparisons)]

    def _one(self, c: Comparison, i: int) -> int | None:
        best = _argmax(c, i, self.name, self.length_bonus)
        if best is None:
            return None
        u, _ = _pair_draw(self.seed, self.name, c)
        return 1 - best if u < self.epsilon else best


class PoolLabeler:
    """A pool of simulated annotators (AlpacaFarm, Dubois 2023); each pair is labeled by one of them.

    The annotator of a pair is drawn with probability weight_i / Σ weights, a pure function of (seed,
    pair) like every draw here. Annotator i prefers a with probability
    σ((g_a − g_b)/T_i + length_bonus_i·(words_a − words_b)), T_i = temperature_scale_i · T, and its
    label is then flipped with probability flip_i. `length_bonus` is in log-odds per word (words:
    `scorers.word_count`), so a length-biased annotator prefers the longer completion more often than
    the gold does, whatever the gold's scale. The pool's own `length_bonus` (labeler.length_bonus, in
    gold units per word) replaces g by g + length_bonus · words for every annotator, before T_i.
    """

    name = "pool"

    def __init__(
        self, annotators: Sequence[AnnotatorConfig], temperature: float, seed: int, length_bonus: float = 0.0
    ):
        _check_temperature(temperature, "labeler.temperature")
        self.length_bonus = _check_length_bonus(length_bonus)
        if not annotators:
            raise ConfigError("labeler.annotators: labeler=pool needs at least one annotator")
        for i, a in enumerate(annotators):
            _check_temperature(a.temperature_scale, f"labeler.annotators.{i}.temperature_scale")
            _check_epsilon(a.flip, f"labeler.annotators.{i}.flip")
            if not (_is_number(a.weight) and math.isfinite(a.weight) and a.weight > 0):
                raise ConfigError(
                    f"labeler.annotators.{i}.weight must be a finite number > 0, got {a.weight!r}"
                )
            if not (_is_number(a.length_bonus) and math.isfinite(a.length_bonus)):
                raise ConfigError(
                    f"labeler.annotators.{i}.length_bonus must be a finite number, got {a.length_bonus!r}"
                )
        names = [a.name for a in annotators]
        if len(set(names)) < len(names):
            raise ConfigError(f"labeler.annotators: each annotator needs its own name, got {names}")
        self.annotators = list(annotators)
        self.temperature = float(temperature)
        self.seed = seed
        total = sum(a.weight for a in self.annotators)
        self.shares = [a.weight / total for a in self.annotators]  # each annotator's expected share of pairs
        self._bounds = list(itertools.accumulate(self.shares))

    def label(self, comparisons: Sequence[Comparison]) -> list[int | None]:
        return [self._one(c, i) for i, c in enumerate(comparisons)]

    def annotators_of(self, comparisons: Sequence[Comparison]) -> list[str]:
        """The name of the annotator who labels each comparison (the same one in either orientation)."""
        return [self._annotator(c).name for c in comparisons]

    def probability(self, c: Comparison, i: int = 0) -> float:
        """P(label = 1, a preferred) over the draw of the annotator: what a model that knows the gold and
        the lengths, but not the annotator, can at best predict; the pool's ceiling is E[max(p, 1 − p)]."""
        return sum(share * self._p_a(a, c, i) for a, share in zip(self.annotators, self.shares, strict=True))

    def _annotator(self, c: Comparison) -> AnnotatorConfig:
        u, _ = _pair_draw(self.seed, "pool/annotator", c)
        return next(
            (a for a, hi in zip(self.annotators, self._bounds, strict=True) if u < hi), self.annotators[-1]
        )

    def _logit(self, a: AnnotatorConfig, c: Comparison, i: int, a_first: bool = True) -> float:
        """Annotator a's log-odds that the first of (c.a, c.b) — or of (c.b, c.a) when not a_first — wins."""
        ga, gb = _utility(c, i, self.name, self.length_bonus)
        words = word_count(c.a) - word_count(c.b)
        logit = (ga - gb) / (a.temperature_scale * self.temperature) + a.length_bonus * words
        return logit if a_first else -logit

    def _p_a(self, a: AnnotatorConfig, c: Comparison, i: int) -> float:
        p = _sigmoid(self._logit(a, c, i))
        return (1 - a.flip) * p + a.flip * (1 - p)

    def _one(self, c: Comparison, i: int) -> int:
        annotator = self._annotator(c)
        u, a_first = _pair_draw(self.seed, f"pool/{annotator.name}", c)
        first_wins = u < _sigmoid(self._logit(annotator, c, i, a_first))
        flip, _ = _pair_draw(self.seed, f"pool/{annotator.name}/flip", c)
        if flip < annotator.flip:
            first_wins = not first_wins
        return int(first_wins == a_first)


# ------------------------------------------------------------------------------- human labels
class FileLabeler:
    """Human labels joined from a CSV, JSONL or Parquet file (or anything `load_source` reads).

    Columns, exactly: prompt, completion_a, completion_b, choice; choice is the string "a" or "b"
    (nothing else: no 0/1, no upper case). Texts are matched exactly, whitespace included. A comparison
    found as (prompt, b, a) gets the inverted choice; one not found gets None and counts in `missing`.
    Row numbers in errors are 0-based: the line of a JSONL file, the data row of a CSV file (header not
    counted), the record of other formats.
    """

    name = "file"

    def __init__(self, path: str, seed: int = 0):
        self.path = str(path)
        self.seed = seed  # unused: the labels are given; kept so that every labeler is built alike
        self.labels = read_labels(self.path)  # (prompt, first, second) in sorted order -> (label, row)
        self.found = 0  # comparisons labeled so far, over all calls of `label`
        self.missing = 0  # comparisons with no human label so far

    def __len__(self) -> int:
        return len(self.labels)

    def label(self, comparisons: Sequence[Comparison]) -> list[int | None]:
        out = [self._lookup(c) for c in comparisons]
        missing = sum(x is None for x in out)
        self.missing += missing
        self.found += len(out) - missing
        return out

    def _lookup(self, c: Comparison) -> int | None:
        a_first = c.a <= c.b
        key = (c.prompt, c.a, c.b) if a_first else (c.prompt, c.b, c.a)
        hit = self.labels.get(key)
        if hit is None:
            return None
        return hit[0] if a_first else 1 - hit[0]


# ---------------------------------------------------------------------------------------- factory
def make_labeler(
    kind: str,
    *,
    temperature: float = 1.0,
    epsilon: float = 0.0,
    path: str | None = None,
    annotators: Sequence[AnnotatorConfig] = (),
    seed: int = 0,
    length_bonus: float = 0.0,
) -> Labeler:
    """The labeler for `labeler=bt|argmax|flip|pool|file`; errors name the config key."""
    length_bonus = _check_length_bonus(length_bonus)
    if kind == "bt":
        _check_temperature(temperature, "labeler.temperature")
        return BradleyTerryLabeler(temperature, seed, length_bonus)
    if kind == "argmax":
        return ArgmaxLabeler(length_bonus)
    if kind == "flip":
        _check_epsilon(epsilon, "labeler.epsilon")
        return FlipLabeler(epsilon, seed, length_bonus)
    if kind == "pool":
        return PoolLabeler(annotators, temperature, seed, length_bonus)
    if kind == "file":
        if length_bonus:
            raise ConfigError(
                f"labeler.length_bonus={length_bonus}: labeler=file reads human labels, which no length "
                "bonus changes; set it to 0"
            )
        if not path:
            raise ConfigError(
                "labeler.path must name a CSV, JSONL or Parquet file of human labels (labeler=file)"
            )
        return FileLabeler(path, seed)
    raise ConfigError(f"labeler: unknown kind {kind!r}; choose one of {', '.join(KINDS)}")


# -------------------------------------------------------------------------------------- ceilings
def bt_ceiling(gold_a: Tensor, gold_b: Tensor, temperature: float) -> float:
    """E[σ(|g_a − g_b|/T)]: the best accuracy any model can reach against labels sampled by
    BradleyTerryLabeler."""
    _check_temperature(temperature, "temperature")
    ga = torch.as_tensor(gold_a, dtype=torch.float64)
    gb = torch.as_tensor(gold_b, dtype=torch.float64)
    if ga.shape != gb.shape or ga.numel() == 0:
        shapes = f"{tuple(ga.shape)} and {tuple(gb.shape)}"
        raise ValueError(f"bt_ceiling needs two non-empty tensors of one shape, got {shapes}")
    return _ceiling((ga - gb).abs(), float(temperature))


def _ceiling(gaps: Tensor, temperature: float) -> float:
    return torch.sigmoid(gaps / temperature).mean().item()


def limit_temperature(gaps: Tensor) -> float:
    """The T -> 0 limit of Bradley-Terry labels as a T: the smallest nonzero |gap| / 40, at which every
    nonzero gap is labeled as gold orders it (σ(40) is 1 in float64) and a zero gap by a coin flip, so
    that bt_ceiling is its T -> 0 value. ValueError without a nonzero gap (only coin flips are left)."""
    gaps = torch.as_tensor(gaps, dtype=torch.float64).abs()
    positive = gaps[gaps > 0]
    if positive.numel() == 0:
        raise ValueError("every gold gap is zero: the gold scores tell no pair apart, so no T labels them")
    return positive.min().item() / 40


def temperature_for_ceiling(gaps: Tensor, target: float, key: str = "labeler.ceiling") -> float:
    """The T at which bt_ceiling over these |gold gaps| equals target (bisection in log T; target in
    (0.5, 1)). A target at or above the ceiling as T -> 0 (which zero gaps lower) is out of reach: then
    the nearest reachable setting, that limit (limit_temperature), with a warning naming `key`; without
    a nonzero gap no T labels better than a coin, and that is a ValueError."""
    gaps = torch.as_tensor(gaps, dtype=torch.float64).abs().flatten()
    if gaps.numel() == 0 or not torch.isfinite(gaps).all():
        raise ValueError("temperature_for_ceiling needs a non-empty tensor of finite gaps")
    if not 0.5 < target < 1:
        raise ValueError(f"target must be in (0.5, 1), got {target!r}")
    tied = (gaps == 0).double().mean().item()
    best = 1 - 0.5 * tied  # the ceiling as T -> 0: zero gaps stay coin flips
    if target >= best:
        temperature = limit_temperature(gaps)
        log.warning(
            "%s=%s: target %s is out of reach for these gold gaps (%.1f%% of the pairs are tied); "
            "labeling at the T -> 0 limit instead: T=%.3g, ceiling %.4f",
            *(key, target, target, 100 * tied, temperature, best),
        )
        return temperature
    positive = gaps[gaps > 0]
    lo, hi = math.log(positive.min().item()), math.log(positive.max().item())
    for _ in range(200):  # widen until ceiling(lo) > target >= ceiling(hi)
        if _ceiling(gaps, math.exp(lo)) > target and _ceiling(gaps, math.exp(hi)) <= target:
            break
        lo, hi = lo - 1, hi + 1
    else:
        raise ValueError(f"target {target} could not be bracketed")
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _ceiling(gaps, math.exp(mid)) > target else (lo, mid)
    return math.exp((lo + hi) / 2)
