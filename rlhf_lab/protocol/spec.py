"""The declaration of a comparison (`experiments/<name>/protocol.yaml`), read and checked before anything
runs. Every problem is reported at once, each naming its key.

    name: pg_family                    # optional: the protocol file's folder name
    question: RLOO against PPO at equal samples (Ahmadian et al. 2024)
    base: [experiment=pg_family]       # overrides of every run
    arms:                              # ≥ 2; each its overrides and its grid
      rloo: {overrides: [algo=rloo], tune: {rl.lr: [1.0e-4, 3.0e-4, 1.0e-3]}}
      ppo:  {overrides: [algo=ppo_critic], tune: {rl.lr: [3.0e-5, 1.0e-4, 3.0e-4]}}
    seeds:
      key: rl.seed                     # optional: <the run's stage>.seed
      tuning: [100, 101]               # disjoint from the evaluation seeds
      evaluation: [0, 1, 2, 3, 4]      # ≥ 5 (Henderson et al. 2018; Agarwal et al. 2021)
    tuning_overrides: []               # optional: only the tuning runs (e.g. shorter ones)
    selection: max_mean_at_budget      # or max_mean_final
    metric: gold                       # an eval.jsonl column, higher is better
    budget: {axis: samples, value: 1536}
    also_at: [{axis: wall_time, value: 120}]   # optional: further budgets, the same runs
    matched_kl: 6.0                    # optional: also compare where each run's KL reaches 6 nats
    comparisons: {primary: [ppo, rloo], secondary: []}
    test: t                            # the paired test: t, sign_flip or sign (report/stats.py)
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from rlhf_lab.budget import AXES
from rlhf_lab.errors import UserError
from rlhf_lab.report.stats import TESTS

MIN_EVALUATION_SEEDS = 5
RULES = {
    "max_mean_at_budget": "the largest mean over the tuning seeds of {metric} at {budget}",
    "max_mean_final": "the largest mean over the tuning seeds of the final {metric}",
}
KEYS = (
    "name question base arms seeds tuning_overrides selection metric budget also_at matched_kl peak "
    "comparisons test"
).split()
NAME = re.compile(r"^[A-Za-z][\w-]*$")


class ProtocolError(UserError):
    """A protocol file that cannot run; the message names every bad key."""


@dataclass(frozen=True)
class Arm:
    name: str
    overrides: tuple[str, ...]
    grid: dict[str, tuple[str, ...]]  # tuned field -> its values, as override values

    def settings(self) -> list[tuple[str, ...]]:
        """Every point of the grid as overrides, the first field varying slowest; one empty setting when
        nothing is tuned."""
        fields = list(self.grid)
        return [
            tuple(f"{f}={v}" for f, v in zip(fields, values, strict=True))
            for values in itertools.product(*self.grid.values())
        ]


@dataclass(frozen=True)
class View:
    """Where arms are compared: a budget axis (`budget.AXES`) or `kl`, at `value`; or each run's `peak`,
    its best evaluation (Gao et al. 2022 compare proxies by the gold's peak)."""

    axis: str
    value: float

    def __str__(self) -> str:
        return self.axis if self.axis == PEAK.axis else f"{self.axis}={self.value:g}"


PEAK = View("peak", 0.0)


@dataclass(frozen=True)
class Protocol:
    path: Path
    name: str
    question: str
    base: tuple[str, ...]
    arms: dict[str, Arm]
    seed_key: str | None  # None: each run's `<stage>.seed`
    tuning_seeds: tuple[int, ...]
    evaluation_seeds: tuple[int, ...]
    tuning_overrides: tuple[str, ...]
    selection: str
    metric: str
    budget: View
    also_at: tuple[View, ...]
    matched_kl: float | None
    peak: bool
    primary: tuple[str, str]
    secondary: tuple[tuple[str, str], ...]
    test: str

    @property
    def views(self) -> list[View]:
        """Every place the arms are compared: the budget, the further budgets, the matched KL, the peak."""
        kl = [View("kl", self.matched_kl)] if self.matched_kl is not None else []
        return [self.budget, *self.also_at, *kl, *([PEAK] if self.peak else [])]

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """The comparisons a − b, the primary first."""
        return [self.primary, *self.secondary]

    def rule(self) -> str:
        return RULES[self.selection].format(metric=self.metric, budget=self.budget)


def load(path: str | Path) -> Protocol:
    """The protocol declared in `path`; a ProtocolError naming every bad key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ProtocolError(f"{path}: not valid YAML: {e}") from e
    problems: list[str] = []
    protocol = parse(raw if isinstance(raw, dict) else {}, path, problems)
    if not isinstance(raw, dict):
        problems.insert(0, "the file must be a mapping of the keys " + ", ".join(KEYS))
    if problems:
        raise ProtocolError(f"{path}:\n  " + "\n  ".join(problems))
    return protocol


def parse(raw: dict, path: Path, problems: list[str]) -> Protocol:
    """The Protocol of a loaded YAML mapping; each problem appended to `problems` as 'key: message'."""
    problems += [f"{k}: unknown key; the keys are {', '.join(KEYS)}" for k in raw if k not in KEYS]
    arms = _arms(raw.get("arms"), problems)
    seeds = raw.get("seeds") if isinstance(raw.get("seeds"), dict) else {}
    if not isinstance(raw.get("seeds"), dict):
        problems.append("seeds: a mapping of key (optional), tuning and evaluation")
    tuning = _seeds(seeds.get("tuning"), "seeds.tuning", 1, problems)
    evaluation = _seeds(seeds.get("evaluation"), "seeds.evaluation", MIN_EVALUATION_SEEDS, problems)
    if shared := sorted(set(tuning) & set(evaluation)):
        problems.append(
            f"seeds.tuning: {shared} are also evaluation seeds; tuning and evaluation seeds must be "
            "disjoint, so that the chosen settings are evaluated on fresh seeds"
        )
    selection = raw.get("selection", "max_mean_at_budget")
    if selection not in RULES:
        problems.append(f"selection: {selection!r} is not a rule; the rules are {', '.join(RULES)}")
    test = raw.get("test", "t")
    if test not in TESTS:
        problems.append(f"test: {test!r} is not a test; the tests are {', '.join(TESTS)}")
    comparisons = raw.get("comparisons") if isinstance(raw.get("comparisons"), dict) else {}
    primary = _pair(comparisons.get("primary"), "comparisons.primary", arms, problems)
    secondary = [
        _pair(p, f"comparisons.secondary[{i}]", arms, problems)
        for i, p in enumerate(comparisons.get("secondary") or [])
    ]
    if len({frozenset(p) for p in [primary, *secondary]}) < 1 + len(secondary):
        problems.append("comparisons.secondary: a pair of arms is compared twice")
    matched_kl = raw.get("matched_kl")
    if matched_kl is not None and not _positive(matched_kl):
        problems.append(f"matched_kl: {matched_kl!r} must be a KL in nats > 0, or null")
    peak = raw.get("peak", False)
    if not isinstance(peak, bool):
        problems.append(f"peak: {peak!r} must be true (also compare each run's best evaluation) or false")
    metric = raw.get("metric", "gold")
    if not isinstance(metric, str) or metric in AXES or metric == "step":
        problems.append(f"metric: {metric!r} must be an eval.jsonl column such as gold")
    return Protocol(
        path=path,
        name=str(raw.get("name") or path.resolve().parent.name),
        question=str(raw.get("question", "")),
        base=_overrides(raw.get("base", []), "base", problems),
        arms=arms,
        seed_key=seeds.get("key"),
        tuning_seeds=tuning,
        evaluation_seeds=evaluation,
        tuning_overrides=_overrides(raw.get("tuning_overrides", []), "tuning_overrides", problems),
        selection=selection,
        metric=metric,
        budget=_view(raw.get("budget"), "budget", problems),
        also_at=tuple(_view(v, f"also_at[{i}]", problems) for i, v in enumerate(raw.get("also_at") or [])),
        matched_kl=float(matched_kl) if _positive(matched_kl) else None,
        peak=peak is True,
        primary=primary,
        secondary=tuple(secondary),
        test=test,
    )


# ------------------------------------------------------------------------------------------ the parts
def _arms(raw, problems: list[str]) -> dict[str, Arm]:
    if not isinstance(raw, dict) or len(raw) < 2:
        problems.append("arms: a mapping of at least two arms, each with overrides and tune")
        return {}
    arms = {}
    for name, arm in raw.items():
        key = f"arms.{name}"
        if not NAME.match(str(name)):
            problems.append(f"{key}: an arm's name is a letter, then letters, digits, _ or -")
        arm = arm if isinstance(arm, dict) else {}
        problems += [
            f"{key}.{k}: unknown key; an arm has overrides and tune"
            for k in arm
            if k not in ("overrides", "tune")
        ]
        overrides = _overrides(arm.get("overrides", []), f"{key}.overrides", problems)
        grid = {}
        for field, values in (arm.get("tune") or {}).items():
            if not isinstance(values, list) or not values:
                problems.append(f"{key}.tune.{field}: a non-empty list of values")
                continue
            if any(o.partition("=")[0].lstrip("+~") == field for o in overrides):
                problems.append(f"{key}.tune.{field}: also set in {key}.overrides; tune it or set it")
            grid[field] = tuple(_value(v) for v in values)
        arms[str(name)] = Arm(str(name), overrides, grid)
    return arms


def _overrides(raw, key: str, problems: list[str]) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(o, str) and "=" in o for o in raw):
        problems.append(f"{key}: a list of overrides such as algo=rloo")
        return ()
    return tuple(raw)


def _seeds(raw, key: str, least: int, problems: list[str]) -> tuple[int, ...]:
    if not isinstance(raw, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in raw):
        problems.append(f"{key}: a list of integer seeds")
        return ()
    if len(set(raw)) != len(raw):
        problems.append(f"{key}: a seed is listed twice")
    if len(set(raw)) < least:
        why = " (Henderson et al. 2018; Agarwal et al. 2021)" if least > 1 else ""
        problems.append(f"{key}: {len(set(raw))} seeds; at least {least} are needed{why}")
    return tuple(raw)


def _view(raw, key: str, problems: list[str]) -> View:
    raw = raw if isinstance(raw, dict) else {}
    axis, value = raw.get("axis"), raw.get("value")
    if axis not in AXES:
        problems.append(f"{key}.axis: {axis!r} is not a budget axis; the axes are {', '.join(AXES)}")
    if not _positive(value):
        problems.append(f"{key}.value: {value!r} must be a number > 0, the budget at which arms are compared")
    return View(str(axis), float(value) if _positive(value) else 0.0)


def _pair(raw, key: str, arms: dict[str, Arm], problems: list[str]) -> tuple[str, str]:
    if not (isinstance(raw, list) and len(raw) == 2 and raw[0] != raw[1]):
        problems.append(f"{key}: two different arms [a, b], compared as a − b")
        return ("", "")
    for arm in raw:
        if arm not in arms:
            problems.append(f"{key}: {arm!r} is not an arm; the arms are {', '.join(arms)}")
    return (str(raw[0]), str(raw[1]))


def _positive(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _value(value) -> str:
    """A YAML value as it is written in an override: true/false/null in lower case."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return str(value)
