"""Labelers: BT statistics against their ceiling, argmax/flip, order-independent draws, human-label files."""

from __future__ import annotations

import csv
import logging
import math
import random

import datasets
import pytest
import torch

from rlhf_lab.config import AnnotatorConfig
from rlhf_lab.data.sources import DataError
from rlhf_lab.labelers import (
    ArgmaxLabeler,
    BradleyTerryLabeler,
    Comparison,
    FileLabeler,
    FlipLabeler,
    Labeler,
    PoolLabeler,
    bt_ceiling,
    make_labeler,
    temperature_for_ceiling,
)
from tests.helpers import write_jsonl

N = 20_000
T = 0.3


@pytest.fixture(scope="module")
def synthetic() -> list[Comparison]:
    g = torch.Generator().manual_seed(0)
    gold = (torch.rand(N, 2, generator=g, dtype=torch.float64) * 2 - 1).tolist()
    return [Comparison(f"prompt {i % 500}", f"a{i}", f"b{i}", ga, gb) for i, (ga, gb) in enumerate(gold)]


def golds(comps: list[Comparison]) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        torch.tensor([c.gold_a for c in comps], dtype=torch.float64),
        torch.tensor([c.gold_b for c in comps], dtype=torch.float64),
    )


def test_bt_agreement_matches_ceiling(synthetic):
    labels = torch.tensor(BradleyTerryLabeler(T, seed=1).label(synthetic), dtype=torch.float64)
    ga, gb = golds(synthetic)
    agree = (labels == (ga > gb).double()).double().mean().item()
    p = torch.sigmoid((ga - gb).abs() / T)
    se = (p * (1 - p)).sum().sqrt().item() / N
    assert abs(agree - bt_ceiling(ga, gb, T)) < 4 * se
    assert 0.6 < agree < 0.95  # the test means something: neither coin flips nor argmax


def test_bt_preference_rate_follows_sigmoid_in_gap_bins(synthetic):
    labels = torch.tensor(BradleyTerryLabeler(T, seed=2).label(synthetic), dtype=torch.float64)
    ga, gb = golds(synthetic)
    gap = ga - gb
    edges = torch.linspace(-2, 2, 9)
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (gap >= lo) & (gap < hi)
        if inside.sum() < 200:
            continue
        p = torch.sigmoid(gap[inside] / T)
        se = (p * (1 - p)).sum().sqrt().item() / inside.sum().item()
        assert abs(labels[inside].mean().item() - p.mean().item()) < 4 * se + 1e-9, (lo, hi)


def test_temperature_for_ceiling_hits_target():
    gaps = (torch.rand(5000, generator=torch.Generator().manual_seed(3)) * 2 - 1).abs()
    temps = []
    for target in (0.55, 0.7, 0.85, 0.95, 0.99):
        t = temperature_for_ceiling(gaps, target)
        assert abs(bt_ceiling(gaps, torch.zeros_like(gaps), t) - target) < 1e-3
        temps.append(t)
    assert temps == sorted(temps, reverse=True) and len(set(temps)) == len(temps)


@pytest.mark.parametrize("target", [0.5, 1.0, 0.2])
def test_temperature_for_ceiling_rejects_bad_targets(target):
    with pytest.raises(ValueError, match="target"):
        temperature_for_ceiling(torch.tensor([0.1, 0.5]), target)


def test_a_ceiling_out_of_reach_labels_at_the_t_to_0_limit_and_says_so(caplog):
    gaps = torch.tensor([0.0, 0.5, 0.25, 0.0])  # half the pairs are ties: the ceiling is at most 0.75
    with caplog.at_level(logging.WARNING, logger="rlhf_lab.labelers"):
        t = temperature_for_ceiling(gaps, 0.8)
    assert t == 0.25 / 40  # the smallest nonzero gap over 40: σ(40) is 1 in float64
    assert bt_ceiling(gaps, torch.zeros_like(gaps), t) == 0.75  # the ceiling as T -> 0, reached
    (warning,) = caplog.messages
    assert "labeler.ceiling=0.8: target 0.8 is out of reach" in warning and "ceiling 0.7500" in warning
    comps = [Comparison("p", f"a{i}", f"b{i}", g, 0.0) for i, g in enumerate([0.5, -0.25, 0.3, -2.0])]
    assert BradleyTerryLabeler(t, seed=0).label(comps) == ArgmaxLabeler().label(comps)  # argmax-like


def test_a_ceiling_is_an_error_when_every_gold_gap_is_zero():
    with pytest.raises(ValueError, match="every gold gap is zero"):  # no T labels better than a coin
        temperature_for_ceiling(torch.zeros(4), 0.8)


def test_argmax_agrees_with_gold_and_ties_are_none(synthetic):
    comps = synthetic[:2000] + [Comparison("p", "x", "y", 0.25, 0.25)]
    labels = ArgmaxLabeler().label(comps)
    assert labels[-1] is None
    assert all(lab == int(c.gold_a > c.gold_b) for lab, c in zip(labels[:-1], comps[:-1], strict=True))


@pytest.mark.parametrize("epsilon", [0.0, 0.2, 1.0])
def test_flip_disagrees_at_rate_epsilon(synthetic, epsilon):
    labels = FlipLabeler(epsilon, seed=4).label(synthetic)
    best = ArgmaxLabeler().label(synthetic)
    rate = sum(lab != b for lab, b in zip(labels, best, strict=True)) / N
    assert abs(rate - epsilon) <= 4 * math.sqrt(epsilon * (1 - epsilon) / N)
    assert FlipLabeler(epsilon, seed=4).label([Comparison("p", "x", "y", 0.1, 0.1)]) == [None]


def test_gold_labelers_need_gold_scores():
    for labeler in (BradleyTerryLabeler(1.0, 0), ArgmaxLabeler(), FlipLabeler(0.1, 0)):
        with pytest.raises(ValueError, match="gold scorer"):
            labeler.label([Comparison("p", "x", "y", 0.1, 0.2), Comparison("p", "x", "z", 0.1, None)])


POOL = [  # conf/labeler/pool.yaml's annotators
    AnnotatorConfig("careful", temperature_scale=0.5),
    AnnotatorConfig("typical"),
    AnnotatorConfig("careless", flip=0.25),
    AnnotatorConfig("verbose", length_bonus=0.1),
]


@pytest.mark.parametrize(
    "labeler",
    [BradleyTerryLabeler(T, 5), FlipLabeler(0.3, 5), PoolLabeler(POOL, T, 5)],
    ids=["bt", "flip", "pool"],
)
def test_labels_are_order_and_batch_independent(synthetic, labeler):
    comps = synthetic[:3000]
    whole = labeler.label(comps)
    order = list(range(len(comps)))
    random.Random(0).shuffle(order)
    shuffled = labeler.label([comps[i] for i in order])
    assert [shuffled[order.index(i)] for i in range(len(comps))] == whole
    batched = [lab for s in range(0, len(comps), 37) for lab in labeler.label(comps[s : s + 37])]
    assert batched == whole
    swapped = labeler.label([Comparison(c.prompt, c.b, c.a, c.gold_b, c.gold_a) for c in comps])
    assert swapped == [1 - lab for lab in whole]  # one pair, one winner, in either orientation


def test_bt_seeds_give_different_labels(synthetic):
    comps = synthetic[:3000]
    one, two = BradleyTerryLabeler(T, 0).label(comps), BradleyTerryLabeler(T, 1).label(comps)
    assert sum(x != y for x, y in zip(one, two, strict=True)) > 300


# ------------------------------------------------------------------------------- human labels
KEYS = ("prompt", "completion_a", "completion_b", "choice")
GOOD = [
    {"prompt": "The film", "completion_a": " was great.", "completion_b": " was dull.", "choice": "a"},
    {"prompt": "The plot", "completion_a": " NA", "completion_b": "42", "choice": "b"},
    # the first pair again, the other way round and consistent
    {"prompt": "The film", "completion_a": " was dull.", "completion_b": " was great.", "choice": "b"},
]
QUERIES = [
    Comparison("The film", " was great.", " was dull."),
    Comparison("The film", " was dull.", " was great."),
    Comparison("The plot", " NA", "42"),
    Comparison("The plot", "42", " NA"),
    Comparison("The plot", " NA", "43"),
    Comparison("Unknown", " was great.", " was dull."),
]


def write_csv(path, rows, header=KEYS):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for r in rows:
            writer.writerow([r[k] for k in header if k in r] if isinstance(r, dict) else r)
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_file_labeler_joins_both_orientations_and_counts_missing(tmp_path, fmt):
    path = tmp_path / f"labels.{fmt}"
    if fmt == "jsonl":
        write_jsonl(path, GOOD)
    elif fmt == "csv":
        write_csv(path, GOOD)
    else:
        datasets.Dataset.from_list(GOOD).to_parquet(str(path))
    labeler = make_labeler("file", path=str(path))
    assert isinstance(labeler, FileLabeler) and isinstance(labeler, Labeler) and len(labeler) == 2
    assert labeler.label(QUERIES) == [1, 0, 0, 1, None, None]
    assert (labeler.found, labeler.missing) == (4, 2)
    labeler.label(QUERIES[:1])
    assert (labeler.found, labeler.missing) == (5, 2)


def bad(field, value):
    """GOOD[0] with `field` set to `value` (or removed when value is ...)."""
    row = dict(GOOD[0])
    if value is ...:
        del row[field]
    else:
        row[field] = value
    return row


JSONL_CASES = [
    (bad("choice", ...), "choice"),
    (bad("prompt", None), "prompt"),
    ({**GOOD[0], "annotator": "x"}, "annotator"),
    (bad("prompt", 3), "prompt"),
    (bad("completion_a", ["x"]), "completion_a"),
    (bad("completion_b", ""), "completion_b"),
    (bad("completion_b", GOOD[0]["completion_a"]), "completion_b"),
    (bad("choice", "c"), "choice"),
    (bad("choice", "A"), "choice"),
    (bad("choice", 1), "choice"),
    (bad("choice", 0), "choice"),
]


@pytest.mark.parametrize(("row", "field"), JSONL_CASES)
def test_file_labeler_rejects_bad_jsonl_rows(tmp_path, row, field):
    path = write_jsonl(tmp_path / "labels.jsonl", [GOOD[1], row])
    with pytest.raises(DataError) as err:
        FileLabeler(str(path))
    assert str(path) in str(err.value) and "row 1" in str(err.value) and f"'{field}'" in str(err.value)


CSV_CASES = [
    (KEYS, [GOOD[1], ["The film", " x", " y", "a", "extra"]], 1, "column 4"),  # a row longer than the header
    (KEYS, [GOOD[1], ["The film", " x", " y"]], 1, "choice"),  # a short row
    (KEYS[:3], [GOOD[1], GOOD[0]], 0, "choice"),  # no choice column
    ((*KEYS, "annotator"), [GOOD[1], [*GOOD[0].values(), "x"]], 1, "annotator"),
    (KEYS, [GOOD[1], bad("prompt", "")], 1, "prompt"),
    (KEYS, [GOOD[1], bad("completion_b", GOOD[0]["completion_a"])], 1, "completion_b"),
    (KEYS, [GOOD[1], bad("choice", "1")], 1, "choice"),
    (KEYS, [GOOD[1], bad("choice", "b ")], 1, "choice"),
]


@pytest.mark.parametrize(("header", "rows", "at", "field"), CSV_CASES)
def test_file_labeler_rejects_bad_csv_rows(tmp_path, header, rows, at, field):
    path = write_csv(tmp_path / "labels.csv", rows, header)
    with pytest.raises(DataError) as err:
        FileLabeler(str(path))
    assert str(path) in str(err.value) and f"row {at}" in str(err.value) and f"'{field}'" in str(err.value)


@pytest.mark.parametrize("write", [write_jsonl, write_csv], ids=["jsonl", "csv"])
def test_file_labeler_rejects_conflicting_duplicates_naming_both_rows(tmp_path, write):
    flipped = {**GOOD[2], "choice": "a"}  # says " was dull." wins, against row 0
    path = write(tmp_path / f"labels.{write.__name__[6:]}", [GOOD[0], GOOD[1], flipped])
    with pytest.raises(DataError, match=r"rows 0 and 2") as err:
        FileLabeler(str(path))
    assert str(path) in str(err.value)


def test_file_labeler_rejects_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        FileLabeler(str(tmp_path / "absent.csv"))
    with pytest.raises(DataError, match="no rows"):
        FileLabeler(str(write_csv(tmp_path / "empty.csv", [])))


# ------------------------------------------------------------------------------------- factory
def test_make_labeler_builds_each_kind():
    assert make_labeler("bt", temperature=0.5, seed=3).name == "bt"
    assert make_labeler("argmax").name == "argmax"
    assert make_labeler("flip", epsilon=0.1).name == "flip"
    assert make_labeler("pool", temperature=0.5, annotators=POOL, seed=1).name == "pool"


@pytest.mark.parametrize(
    ("kind", "kwargs", "key"),
    [
        ("bt", {"temperature": 0.0}, "labeler.temperature"),
        ("bt", {"temperature": -1.0}, "labeler.temperature"),
        ("bt", {"temperature": float("nan")}, "labeler.temperature"),
        ("flip", {"epsilon": 1.5}, "labeler.epsilon"),
        ("flip", {"epsilon": -0.1}, "labeler.epsilon"),
        ("file", {}, "labeler.path"),
        ("pool", {}, "labeler.annotators"),
        ("pool", {"annotators": [AnnotatorConfig(flip=2.0)]}, "labeler.annotators.0.flip"),
        ("human", {}, "labeler"),
    ],
)
def test_make_labeler_errors_name_the_key(kind, kwargs, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        make_labeler(kind, **kwargs)


# ---------------------------------------------------------------------------- annotator pool
def agreement(labels, comps) -> float:
    return sum(lab == int(c.gold_a > c.gold_b) for lab, c in zip(labels, comps, strict=True)) / len(comps)


def test_pool_config_file_is_the_tested_pool(make_cfg):
    assert make_cfg("labeler=pool").labeler.annotators == POOL


def test_pool_annotators_label_their_share_of_the_pairs(synthetic):
    pool = PoolLabeler(POOL, T, seed=0)
    names = pool.annotators_of(synthetic)
    for a in POOL:  # equal weights: a quarter each
        assert abs(names.count(a.name) / N - 0.25) < 4 * math.sqrt(0.25 * 0.75 / N)
    weighted = [AnnotatorConfig("many", weight=3.0), AnnotatorConfig("few")]
    names = PoolLabeler(weighted, T, seed=0).annotators_of(synthetic)
    assert abs(names.count("many") / N - 0.75) < 4 * math.sqrt(0.75 * 0.25 / N)
    swapped = [Comparison(c.prompt, c.b, c.a, c.gold_b, c.gold_a) for c in synthetic[:2000]]
    assert pool.annotators_of(swapped) == pool.annotators_of(synthetic[:2000])  # one pair, one annotator
    other = PoolLabeler(POOL, T, seed=1).annotators_of(synthetic[:2000])
    assert sum(x != y for x, y in zip(other, pool.annotators_of(synthetic[:2000]), strict=True)) > 1000


def test_pool_agreement_with_gold_falls_with_temperature_and_flips(synthetic):
    pool = [
        AnnotatorConfig("cold", temperature_scale=0.25),
        AnnotatorConfig("base"),
        AnnotatorConfig("hot", temperature_scale=4.0),
        AnnotatorConfig("flipper", flip=0.3),
    ]
    labeler = PoolLabeler(pool, T, seed=3)
    labels, names = labeler.label(synthetic), labeler.annotators_of(synthetic)
    agree = {}
    for a in pool:
        mine = [i for i, n in enumerate(names) if n == a.name]
        comps = [synthetic[i] for i in mine]
        agree[a.name] = agreement([labels[i] for i in mine], comps)
        ga, gb = golds(comps)
        p = torch.sigmoid((ga - gb).abs() / (a.temperature_scale * T))
        expected = ((1 - a.flip) * p + a.flip * (1 - p)).mean().item()  # BT ceiling, then flips
        assert abs(agree[a.name] - expected) < 4 * math.sqrt(0.25 / len(mine)), a.name
    assert agree["cold"] > agree["base"] > agree["hot"] > 0.5
    assert agree["base"] - agree["flipper"] > 0.15  # 0.3 flips cost 0.3·(2·agree − 1) ≈ 0.2


def test_pool_length_bias_prefers_longer_completions_more_often_than_gold():
    rng = random.Random(0)
    comps = []
    for i in range(N):
        a, b = rng.randint(2, 30), rng.randint(2, 30)
        if a != b:  # gold is independent of length
            comps.append(
                Comparison(
                    f"p{i % 300}",
                    " ".join(["w"] * a) + f" {i}a",
                    " ".join(["w"] * b) + f" {i}b",
                    rng.uniform(-1, 1),
                    rng.uniform(-1, 1),
                )
            )

    def longer_rate(labels):
        return sum(
            lab == int(len(c.a.split()) > len(c.b.split())) for lab, c in zip(labels, comps, strict=True)
        ) / len(comps)

    gold_rate = longer_rate(ArgmaxLabeler().label(comps))
    plain = longer_rate(PoolLabeler([AnnotatorConfig("plain")], T, seed=0).label(comps))
    verbose = longer_rate(PoolLabeler([AnnotatorConfig("verbose", length_bonus=0.1)], T, seed=0).label(comps))
    terse = longer_rate(PoolLabeler([AnnotatorConfig("terse", length_bonus=-0.1)], T, seed=0).label(comps))
    se = math.sqrt(0.25 / len(comps))
    assert abs(gold_rate - 0.5) < 4 * se and abs(plain - 0.5) < 4 * se  # no length preference
    assert verbose > gold_rate + 0.1 and terse < gold_rate - 0.1


def test_pool_probability_is_the_mixture_of_its_annotators():
    c = Comparison("p", "one two three", "one", 0.3, 0.1)
    pool = PoolLabeler(
        [AnnotatorConfig("x", flip=0.2), AnnotatorConfig("y", length_bonus=0.5, weight=3.0)], 0.5, 0
    )
    px = 0.8 * torch.sigmoid(torch.tensor(0.4)).item() + 0.2 * (1 - torch.sigmoid(torch.tensor(0.4)).item())
    py = torch.sigmoid(torch.tensor(0.4 + 0.5 * 2)).item()
    assert pool.probability(c) == pytest.approx(0.25 * px + 0.75 * py)


def test_collect_labels_with_a_pool_and_reports_each_annotator(make_cfg):
    from rlhf_lab.comparisons import label_pairs

    g = random.Random(1)
    samples = [
        {
            "prompt": f"p{i}",
            "completions": [f"c{i} {j}" + " w" * g.randint(0, 9) for j in range(4)],
            "gold": [g.uniform(-1, 1) for _ in range(4)],
        }
        for i in range(400)
    ]
    pool = ["labeler=pool", "labeler.temperature=null"]  # the pool's T from labeler.ceiling
    rows, stats = label_pairs(make_cfg(*pool, "collect.seed=5"), samples, "policy")
    assert len(rows) == 400 * 6 and {r["labeler"] for r in rows} == {"pool"}
    assert {r["annotator"] for r in rows} == {a.name for a in POOL}
    assert sum(stats[f"pool/{a.name}/share"] for a in POOL) == pytest.approx(1.0)
    assert stats["pool/careful/gold_agreement"] > stats["pool/careless/gold_agreement"]
    assert 0.5 < stats["label_ceiling"] < 0.8 and stats["pool_temperature"] > 0  # T from ceiling 0.8
    again, _ = label_pairs(make_cfg(*pool, "seed=5"), samples, "policy")  # collect.seed null = seed
    assert again == rows
    other, _ = label_pairs(make_cfg(*pool, "seed=5", "collect.seed=6"), samples, "policy")
    assert other != rows


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["labeler.annotators=[]"], "labeler.annotators: labeler=pool needs at least one annotator"),
        (["labeler.annotators.0.flip=1.5"], "labeler.annotators.0.flip: must be <= 1, got 1.5"),
        (["labeler.annotators.1.temperature_scale=0"], "labeler.annotators.1.temperature_scale: must be > 0"),
        (["labeler.annotators.2.name=careful"], "labeler.annotators: each annotator needs its own"),
        (
            ["labeler.temperature=null", "labeler.ceiling=null"],
            "labeler=pool needs a temperature or a ceiling",
        ),
    ],
)
def test_pool_settings_are_checked_naming_the_key(make_cfg, overrides, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("[", r"\[")):
        make_cfg("labeler=pool", *overrides)
