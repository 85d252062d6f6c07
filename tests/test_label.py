"""The labeling page's parts without a server: the label file (events, replay, what labeler=file reads),
its store on disk, the pairs, who gets which pair, the summary, and the config."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from rlhf_lab import api
from rlhf_lab.config import ConfigError, validate
from rlhf_lab.errors import UserError
from rlhf_lab.label.assign import Desk, Refused
from rlhf_lab.label.human_labels import read_labels
from rlhf_lab.label.pairs import Pair, load_pairs, ordered
from rlhf_lab.label.records import LabelFileError, Ledger, fold, pair_id, parse_label, replay
from rlhf_lab.label.serve import train_command
from rlhf_lab.label.store import LabelStore
from rlhf_lab.label.summary import summarize, to_html, to_markdown
from rlhf_lab.labelers import Comparison, make_labeler
from tests.helpers import compose_config


def label(annotator, prompt, a, b, choice, *, seconds=2.0, gold=(None, None), request=None):
    """A label event as the page writes it (a shown left, b right)."""
    return {
        "event": "label",
        "request": request or uuid.uuid4().hex,
        "annotator": annotator,
        "pair": pair_id(prompt, a, b),
        "prompt": prompt,
        "completion_a": a,
        "completion_b": b,
        "gold_a": gold[0],
        "gold_b": gold[1],
        "choice": choice,
        "seconds": seconds,
        "time": "2026-01-01T00:00:00.000Z",
    }


def undo(annotator, prompt, a, b):
    return {
        "event": "undo",
        "request": uuid.uuid4().hex,
        "annotator": annotator,
        "pair": pair_id(prompt, a, b),
    }


def write_events(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ------------------------------------------------------------------------------ the label file
def test_labeler_file_reads_the_standing_majority_of_each_pair(tmp_path):
    path = write_events(
        tmp_path / "labels.jsonl",
        [
            label("ana", "p1", "good", "bad", "a"),  # p1: a for "good"
            label("ana", "p2", "x", "y", "b"),  # undone below, then tie: no row
            undo("ana", "p2", "x", "y"),
            label("ana", "p2", "x", "y", "tie"),
            label("ana", "p3", "u", "v", "skip"),  # skip: no row
            label("ana", "p4", "m", "n", "a"),  # p4: ana and bo disagree: no row
            label("bo", "p4", "n", "m", "a"),  # (bo saw the sides swapped)
            label("ana", "p5", "k", "l", "b"),  # p5: ana b, bo b shown swapped = ana's b; cy ties
            label("bo", "p5", "l", "k", "a"),
            label("cy", "p5", "k", "l", "tie"),
        ],
    )
    labels = read_labels(str(path))  # what labeler=file reads, (prompt, first, second) -> (first wins, row)
    assert labels == {("p1", "bad", "good"): (0, 0), ("p5", "k", "l"): (0, 9)}
    labeler = make_labeler("file", path=str(path))
    got = labeler.label(
        [Comparison("p1", "good", "bad"), Comparison("p1", "bad", "good"), Comparison("p4", "m", "n")]
    )
    assert got == [1, 0, None]


def test_an_undo_takes_back_only_its_label_and_a_relabel_stands(tmp_path):
    rows = [
        label("ana", "p", "a1", "b1", "a"),
        undo("ana", "p", "a1", "b1"),
        label("ana", "p", "a1", "b1", "b"),
    ]
    ledger = replay("f", list(enumerate(rows)))
    assert [d.choice for d in ledger.decisions()] == ["b"] and ledger.undone == 1
    assert [row for _, row in fold("f", list(enumerate(rows)))] == [
        {"prompt": "p", "completion_a": "a1", "completion_b": "b1", "choice": "b"}
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"choice": "c"}, "row 0, field 'choice': expected one of a, b, tie, skip"),
        ({"annotator": ""}, "row 0, field 'annotator': empty"),
        ({"pair": "0123456789abcdef"}, "row 0, field 'pair': not the id of this prompt"),
        ({"seconds": -1}, "row 0, field 'seconds'"),
        ({"completion_b": "same", "completion_a": "same"}, "field 'completion_b': identical"),
        ({"event": "relabel"}, "row 0, field 'event': expected 'label' or 'undo'"),
        ({"prompt": 3}, "row 0, field 'prompt': expected a non-empty string"),
    ],
)
def test_a_bad_event_names_its_row_and_field(tmp_path, change, message):
    path = write_events(tmp_path / "labels.jsonl", [label("ana", "p", "x", "y", "a") | change])
    with pytest.raises(LabelFileError, match=message.replace("(", r"\(")):
        read_labels(str(path))


def test_an_undo_without_a_label_and_a_file_without_verdicts_are_errors(tmp_path):
    path = write_events(tmp_path / "a.jsonl", [undo("ana", "p", "x", "y")])
    with pytest.raises(LabelFileError, match="row 0, field 'pair': 'ana' has no label on it to undo"):
        read_labels(str(path))
    path = write_events(tmp_path / "b.jsonl", [label("ana", "p", "x", "y", "skip")])
    with pytest.raises(LabelFileError, match="no pair has a standing 'a' or 'b' label yet"):
        read_labels(str(path))


# ------------------------------------------------------------------------------ the store
def test_the_store_appends_whole_lines_and_cuts_a_torn_last_line(tmp_path):
    path = tmp_path / "deep" / "labels.jsonl"
    store = LabelStore(path)
    assert [store.append(label("ana", "p", "x", f"y{i}", "a")) for i in range(3)] == [0, 1, 2]
    with pytest.raises(UserError, match="open in another labeling server"):
        LabelStore(path)  # one server per file
    store.close()
    whole = path.read_bytes()
    with open(path, "ab") as f:
        f.write(b'{"event": "label", "annot')  # a power cut mid-write
    store = LabelStore(path)
    assert store.torn == 25 and path.read_bytes() == whole and store.lines == 3
    assert [p.read_bytes() for p in tmp_path.glob("deep/labels.jsonl.torn-*")] == [
        b'{"event": "label", "annot'
    ]
    assert len(replay(str(path), store.read()).decisions()) == 3
    store.close()


def test_a_line_that_is_not_json_stops_the_store_with_its_row(tmp_path):
    path = tmp_path / "labels.jsonl"
    path.write_text(json.dumps(label("ana", "p", "x", "y", "a")) + "\nnot json\n")
    store = LabelStore(path)
    with pytest.raises(LabelFileError, match="row 1: not a JSON line"):
        store.read()
    store.close()


# ------------------------------------------------------------------------------ the pairs
def test_pairs_from_a_collect_artifact_and_from_csv(tmp_path):
    artifact = tmp_path / "collect"
    artifact.mkdir()
    rows = [
        {"prompt": "p", "chosen": "good", "rejected": "bad", "gold_chosen": 0.9, "gold_rejected": -0.2},
        {"prompt": "p", "chosen": "bad", "rejected": "good", "gold_chosen": -0.2, "gold_rejected": 0.9},
        {"prompt": "q", "chosen": "yes", "rejected": "no", "gold_chosen": 0.1, "gold_rejected": 0.3},
    ]
    (artifact / "preferences.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs = load_pairs(str(artifact))  # the same pair twice is one pair
    assert [(p.prompt, p.first, p.second, p.gold_first, p.gold_second) for p in pairs] == [
        ("p", "bad", "good", -0.2, 0.9),
        ("q", "no", "yes", 0.3, 0.1),
    ]
    csv = tmp_path / "pairs.csv"
    csv.write_text('prompt,completion_a,completion_b\np,good,"bad, really"\n')
    assert [(p.first, p.second, p.gold_first) for p in load_pairs(str(csv))] == [
        ("bad, really", "good", None)
    ]


def test_conversational_pairs_are_labeled_as_the_text_labeler_file_matches(tmp_path):
    from rlhf_lab.data.chat import display

    prompt = [{"role": "user", "content": "How was <the> film?"}]
    row = {"prompt": prompt, "chosen": [{"role": "assistant", "content": "Superb."}]}
    row |= {"rejected": [{"role": "assistant", "content": "Dull."}], "gold_chosen": 1, "gold_rejected": 0}
    path = tmp_path / "preferences.jsonl"
    path.write_text(json.dumps(row) + "\n")
    (pair,) = load_pairs(str(path))
    assert (pair.prompt, pair.first, pair.second) == (display(prompt), "Dull.", "Superb.")
    shown = pair.shown(0)
    labels = write_events(tmp_path / "labels.jsonl", [label("ana", pair.prompt, shown["completion_a"],
                                                            shown["completion_b"], "a")])  # fmt: skip
    labeler = make_labeler("file", path=str(labels))  # collect looks conversations up by display(prompt)
    assert labeler.label([Comparison(display(prompt), shown["completion_a"], shown["completion_b"])]) == [1]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"prompt": "p", "completion_a": "x"}, "row 0, field 'completion_b': missing"),
        ({"prompt": "p", "completion_a": "x", "completion_b": "x"}, "field 'completion_b': identical"),
        ({"prompt": "", "completion_a": "x", "completion_b": "y"}, "field 'prompt': expected a non-empty"),
        ({"prompt": "p", "chosen": "x", "rejected": "y", "gold_chosen": "high"}, "field 'gold_chosen'"),
    ],
)
def test_bad_pairs_name_their_row_and_field(tmp_path, row, message):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(UserError, match=message):
        load_pairs(str(path))


def test_order_and_sides_are_seeded_and_independent_of_the_file_order():
    pairs = [Pair(pair_id("p", f"a{i}", f"b{i}"), "p", f"a{i}", f"b{i}") for i in range(200)]
    assert ordered(pairs, 0) == ordered(pairs[::-1], 0) != ordered(pairs, 1)
    left_first = sum(p.shown(0)["completion_a"] == p.first for p in pairs)
    assert 70 < left_first < 130  # a fair coin per pair
    assert all(p.shown(0) == p.shown(0) for p in pairs)


# ------------------------------------------------------------------------------ who gets which pair
def make_pairs(n):
    return [Pair(pair_id(f"p{i}", f"a{i}", f"b{i}"), f"p{i}", f"a{i}", f"b{i}", 1.0, 0.0) for i in range(n)]


def decide(desk, annotator, pair, choice="a", row=0):
    desk.check_label(annotator, pair.id, choice, f"req-{annotator}-{pair.id}")
    event = {
        "event": "label",
        "request": f"req-{annotator}-{pair.id}",
        "annotator": annotator,
        "pair": pair.id,
    }
    event |= pair.shown(0) | {"choice": choice, "seconds": 1.0, "time": "t"}
    desk.record_label(parse_label("test", row, event))


def test_annotators_at_once_get_different_pairs_and_a_skip_passes_the_pair_on():
    desk = Desk(make_pairs(4), Ledger(), seed=0)
    first, second = desk.next_for("ana"), desk.next_for("bo")
    assert first != second and desk.next_for("ana") == first  # ana keeps her pair until she decides
    with pytest.raises(Refused, match="with another annotator") as refused:
        desk.check_label("bo", first.id, "a", "req-bo-x")
    assert refused.value.status == 409
    decide(desk, "ana", first, "skip")
    assert desk.next_for("cy") == first  # skipped by ana: still needs someone
    assert desk.next_for("ana") not in (first, second)


def test_the_overlap_share_goes_to_several_annotators():
    desk = Desk(make_pairs(40), Ledger(), seed=0, overlap=0.5, overlap_annotators=2)
    labeled: dict[str, set[str]] = {}
    while True:  # ana and bo in turns, until neither gets a pair
        got = [(who, desk.next_for(who)) for who in ("ana", "bo")]
        for who, pair in got:
            if pair is not None:
                decide(desk, who, pair)
                labeled.setdefault(pair.id, set()).add(who)
        if all(pair is None for _, pair in got):
            break
    twice = {p for p, who in labeled.items() if len(who) == 2}
    assert len(labeled) == 40 and twice == {p for p, n in desk.needed.items() if n == 2}
    assert 10 <= len(twice) <= 30 and desk.progress("ana")["done"] == 40


def test_an_undo_gives_the_pair_back_and_a_stale_claim_expires():
    now = [0.0]
    desk = Desk(make_pairs(3), Ledger(), seed=0, claim_seconds=60, clock=lambda: now[0])
    pair = desk.next_for("ana")
    decide(desk, "ana", pair)
    with pytest.raises(Refused, match="already labeled"):
        desk.check_label("ana", pair.id, "b", "another-request")
    with pytest.raises(Refused, match="is on pair") as wrong:
        desk.check_undo("ana", desk.next_for("ana").id, "undo-1")
    assert wrong.value.status == 409
    desk.check_undo("ana", pair.id, "undo-1")
    desk.record_undo("ana", pair.id, "undo-1")
    assert desk.next_for("ana") == pair and desk.progress("ana")["labeled"] == 0
    held = desk.next_for("bo")
    now[0] = 61.0  # bo walked away: after claim_seconds the pair may go to someone else
    assert desk.next_for("ana") == pair and desk.next_for("cy") == held
    with pytest.raises(Refused, match="unknown pair id") as unknown:
        desk.check_label("ana", "feedfacefeedface", "a", "r1")
    assert unknown.value.status == 404


def test_a_retried_request_is_recognized_not_applied_twice():
    desk = Desk(make_pairs(2), Ledger(), seed=0)
    pair = desk.next_for("ana")
    decide(desk, "ana", pair)
    assert desk.check_label("ana", pair.id, "a", f"req-ana-{pair.id}") is True  # the same request: no write
    with pytest.raises(Refused, match="already used for another request"):
        desk.check_label("ana", pair.id, "b", f"req-ana-{pair.id}")


# ------------------------------------------------------------------------------ the summary
def test_summary_counts_agreement_kappa_gold_and_time():
    rows = [
        label("ana", "p1", "g", "b", "a", seconds=2, gold=(1, 0)),
        label("bo", "p1", "b", "g", "b", seconds=4, gold=(0, 1)),  # agrees with ana (sides swapped)
        label("ana", "p2", "g2", "b2", "b", seconds=6, gold=(1, 0)),  # against gold
        label("bo", "p2", "g2", "b2", "tie", seconds=1, gold=(1, 0)),
        label("ana", "p3", "x", "y", "skip", seconds=3),
    ]
    ledger = replay("f", list(enumerate(rows)))
    s = summarize(ledger.decisions(), ledger.undone, total=10)
    assert (s["pairs"], s["judged"], s["overlapped"], s["trainable"]) == (10, 2, 2, 2)
    assert (s["decisions"], s["labels"], s["ties"], s["skips"]) == (5, 3, 1, 1)
    ana, bo = s["annotators"]
    assert (ana["labels"], ana["skips"], ana["median_seconds"], ana["gold_agreement"]) == (2, 1, 3, 0.5)
    assert (bo["ties"], bo["mean_seconds"], bo["gold_agreement"], bo["gold_pairs"]) == (1, 2.5, 1.0, 1)
    (between,) = s["between"]
    assert between["pairs"] == 2 and between["agreement"] == 0.5
    # κ = (p_o - p_e) / (1 - p_e): ana (first, second), bo (first, tie): p_e = 1/2 * 1/2 = 1/4
    assert between["kappa"] == pytest.approx((0.5 - 0.25) / 0.75)
    assert s["agreement"] == 0.5 and s["gold_agreement"] == pytest.approx(2 / 3)
    assert "| ana | 3 | 2 | 0 | 1 | 3.0 | 3.7 | 50% | 2 |" in to_markdown(s)


def test_the_summary_page_escapes_what_it_shows():
    rows = [label("<script>alert(1)</script>", "p", "x", "y", "a")]
    train = train_command(
        Path("<b>labels.jsonl"), ["stage=label", "debug=fast", "label.port=0", "labeler=bt"]
    )
    assert train == "rlhf-lab stage=reward debug=fast labeler=file 'labeler.path=<b>labels.jsonl'"
    page = to_html(summarize(replay("f", list(enumerate(rows))).decisions(), 0, 1), train)
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "labeler.path=&lt;b&gt;labels.jsonl" in page


# ------------------------------------------------------------------------------ the config
def test_stage_label_composes_and_its_settings_are_checked():
    cfg = validate(compose_config("stage=label", "label.overlap=0.2"))
    assert cfg.stage == "label" and cfg.label.host == "127.0.0.1" and cfg.label.overlap == 0.2
    assert cfg.label.labels.endswith("labels/labels.jsonl")
    with pytest.raises(ConfigError, match=r"label.port: must be <= 65535, got 70000"):
        validate(compose_config("stage=label", "label.port=70000"))
    with pytest.raises(ConfigError, match="label.overlap_annotators: must be >= 2"):
        validate(compose_config("stage=label", "label.overlap_annotators=1"))
    with pytest.raises(ConfigError, match="pipeline: label serves a page until it is stopped"):
        validate(compose_config("stage=label", "pipeline=[collect,label]"))
    with pytest.raises(ConfigError, match="stage: label serves the labeling page until it is stopped"):
        api.run(cfg)  # the Python API runs artifacts; the page is served by the command or serve()
