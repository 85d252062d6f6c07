"""People as the judge, without a server: two policies' held-out samples read from hand-written artifact
folders (the last evaluation, @step, a file) and matched by prompt, the errors for bad input, the
comparison's pairs (sides seeded, policies recorded), the label events that carry it, the win rates with
their Wilson intervals (against textbook values and a hand count), the label summary's and the eval
stage's reports of them, and the run viewer's data and page."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid

import pytest

from rlhf_lab.config import ConfigError
from rlhf_lab.errors import UserError
from rlhf_lab.label.pairs import load_pairs, unit
from rlhf_lab.label.records import LabelFileError, pair_id, replay
from rlhf_lab.label.summary import metrics, summarize, to_markdown
from rlhf_lab.label.winrate import comparisons_in, wilson, win_rates
from rlhf_lab.report import judge
from rlhf_lab.report.rescore import Source
from rlhf_lab.report.viewer import run_data, view
from rlhf_lab.scorers import GoldScorer
from rlhf_lab.stages import evaluate
from tests.label_support import two_policies, write_run

A, B = "runs/rl_a@3", "runs/rl_b@3"


# ------------------------------------------------------------------------------ reading the samples
def test_samples_are_the_last_evaluation_or_the_step_named(tmp_path):
    a, _, prompts = two_policies(tmp_path)
    last, first = judge.read_samples(str(a)), judge.read_samples(f"{a}@0")
    assert last.name == f"{a.resolve()}@3" and first.name == f"{a.resolve()}@0"
    assert last.prompts == first.prompts == prompts
    assert last.completions[0] == " was wonderful and moving, number 0."
    assert first.completions[0] == " was a film, number 0."
    plain = tmp_path / "samples.jsonl"  # a file of prompt, completion (as eval_samples.jsonl is)
    plain.write_text("".join(json.dumps({"prompt": p, "completion": " x"}) + "\n" for p in prompts))
    assert judge.read_samples(str(plain)).name == str(plain.resolve())


def test_a_run_folder_gives_its_trained_policys_samples_and_names_several(tmp_path):
    a, b, _ = two_policies(tmp_path)
    run = tmp_path / "runs" / "rl" / "2026-01-01_00-00-00"
    (run / ".hydra").mkdir(parents=True)
    (run / "result.json").write_text(json.dumps({"status": "completed", "artifacts": {"rl": str(a)}}))
    assert judge.read_samples(f"{run}@0").name == f"{a}@0"
    (run / "result.json").write_text(
        json.dumps({"status": "completed", "artifacts": {"rl": str(a), "dpo": str(b)}})
    )
    with pytest.raises(UserError, match="a folder with several trained policies .*; name one"):
        judge.read_samples(str(run))


@pytest.mark.parametrize(
    ("make", "spec", "message"),
    [
        (lambda d: d.mkdir(), "{d}", "no held-out samples (eval_history.jsonl or eval_samples.jsonl)"),
        (lambda d: None, "{d}", "no such folder or file"),
        (lambda d: write_run(d, {0: [("p", "c")]}), "{d}@5", "field 'step': no evaluation at step 5"),
        (lambda d: write_run(d, {0: [("p", "c")]}), "{d}@last", "expected <folder or file>@<step>"),
        (lambda d: d.write_text('{"prompt": "p"}\n'), "{d}", "row 0, field 'completion': missing"),
        (lambda d: d.write_text("not json\n"), "{d}", "row 0: not a JSON line"),
    ],
)
def test_bad_samples_name_the_file_and_field(tmp_path, make, spec, message):
    where = tmp_path / "policy"
    make(where)
    with pytest.raises(UserError, match=re.escape(message)):
        judge.read_samples(spec.format(d=where))


def test_samples_on_other_prompts_are_refused_naming_both_files(tmp_path):
    a, _, prompts = two_policies(tmp_path)
    other = write_run(tmp_path / "other", {3: [(p + "!", " c") for p in prompts]})
    with pytest.raises(
        UserError, match="not on the same prompts: A .*rl_a/eval_history.jsonl, field 'prompt'"
    ):
        judge.match(judge.read_samples(str(a)), judge.read_samples(str(other)))


def test_config_needs_two_policies_and_no_pairs(make_cfg):
    with pytest.raises(ConfigError, match=r"label.judge: expected two policies' samples, \[A, B\], got 3"):
        make_cfg("stage=label", "label.judge=[a,b,c]")
    with pytest.raises(ConfigError, match="label.judge: a blind comparison serves its own pairs"):
        make_cfg("stage=label", "label.judge=[a,b]", "label.pairs=p.jsonl")


# ------------------------------------------------------------------------------ the comparison's pairs
def test_the_pairs_hold_a_and_b_with_scores_and_the_page_sides_are_seeded(tmp_path):
    a, b, prompts = two_policies(tmp_path)
    gold = GoldScorer("reader")
    rows = judge.comparison_rows(judge.read_samples(str(a)), judge.read_samples(str(b)), gold, None)
    assert len(rows) == 9  # the last prompt's two completions are the same text: not shown
    assert all("wonderful" in r["completion_a"] and "dull" in r["completion_b"] for r in rows)
    expected = gold.score(prompts[:9], [r["completion_a"] for r in rows]).tolist()
    assert [r["gold_a"] for r in rows] == pytest.approx(expected) and rows[0]["proxy_a"] is None
    path = tmp_path / "judge.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    pairs = load_pairs(str(path))
    lefts = []
    for pair in pairs:
        shown = pair.shown(seed=5)
        assert shown["comparison"] == [f"{a.resolve()}@3", f"{b.resolve()}@3"]
        a_left = shown["policy_a"] == shown["comparison"][0]
        assert a_left == ("wonderful" in shown["completion_a"])  # the recorded policy wrote that side
        assert (shown["completion_a"] == pair.first) == (unit(5, "side", pair.id) < 0.5)  # a seeded coin
        lefts.append(a_left)
    assert 0 < sum(lefts) < len(lefts)  # A is shown on both sides


# ------------------------------------------------------------------------------ the win rates
def judged(prompt, choice, *, a_left=True, annotator="ana", gold=(0.5, -0.5), proxy=(1.0, 2.0)):
    """A label event of the comparison (A, B): A's completion 'good', B's 'bad', A shown left or right."""
    left, right = ("good", "bad") if a_left else ("bad", "good")
    flip = (lambda pair: pair) if a_left else (lambda pair: pair[::-1])
    return {
        "event": "label",
        "request": uuid.uuid4().hex,
        "annotator": annotator,
        "pair": pair_id(prompt, left, right),
        "prompt": prompt,
        "completion_a": left,
        "completion_b": right,
        "gold_a": flip(gold)[0],
        "gold_b": flip(gold)[1],
        "proxy_a": flip(proxy)[0],
        "proxy_b": flip(proxy)[1],
        "comparison": [A, B],
        "policy_a": A if a_left else B,
        "policy_b": B if a_left else A,
        "choice": choice,
        "seconds": 1.0,
        "time": "2026-01-01T00:00:00.000Z",
    }


def decisions(events):
    return replay("labels.jsonl", list(enumerate(events))).decisions()


def test_wilson_matches_textbook_values():
    assert wilson(0.7, 10) == pytest.approx((0.3968, 0.8922), abs=1e-4)  # Newcombe 1998's form
    assert wilson(0.0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson(0.5, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)


def test_the_win_rate_counts_each_side_ties_half_and_skips_not():
    # 10 prompts: A chosen on 6 (3 shown left, 3 right), B on 2, ties on 2; one skip left out
    choices = [("a", True), ("b", False), ("a", True), ("b", False), ("a", True), ("b", False)]
    choices += [("b", True), ("a", False), ("tie", True), ("tie", False)]
    events = [judged(f"p{i}", c, a_left=left) for i, (c, left) in enumerate(choices)]
    events.append(judged("p10", "skip"))
    (row,) = win_rates(decisions(events))
    assert (row["a"], row["b"], row["prompts"], row["ties"]) == (A, B, 10, 2)
    assert row["human"] == pytest.approx(0.7)
    assert (row["human_low"], row["human_high"]) == pytest.approx(wilson(0.7, 10))
    assert row["gold"] == 1.0 and row["proxy"] == 0.0  # A's gold higher, its proxy lower, everywhere


def test_several_annotators_on_a_prompt_count_once_by_their_mean():
    events = [
        judged("p0", "a"),
        judged("p0", "b", annotator="bo"),
        judged("p1", "a"),
        judged("p1", "a", annotator="bo"),
    ]
    (row,) = win_rates(decisions(events))
    assert (row["prompts"], row["decisions"], row["human"]) == (2, 4, 0.75)


def test_a_bad_comparison_field_names_its_row():
    event = judged("p0", "a") | {"policy_b": "someone else"}
    with pytest.raises(
        LabelFileError, match="row 0, field 'policy_b': expected the comparison's other policy"
    ):
        decisions([event])
    with pytest.raises(LabelFileError, match="row 0, field 'comparison': expected two policies' names"):
        decisions([judged("p0", "a") | {"comparison": [A, A]}])


def test_the_summary_reports_the_comparison_served(tmp_path):
    sides = [True, False, True, False]  # A chosen on the first three (on either side), B on the last
    events = [judged(f"p{i}", "ab"[(i % 2) ^ (i == 3)], a_left=left) for i, left in enumerate(sides)]
    summary = summarize(decisions(events), 0, 4) | {"served": [A, B]}
    found = metrics(summary)
    assert found["label/judge/human_win_rate"] == 0.75 and found["label/judge/gold_win_rate"] == 1.0
    low, high = wilson(0.75, 4)
    assert found["label/judge/human_win_rate_low"] == pytest.approx(low)
    assert f"| runs/rl_a@3 | runs/rl_b@3 | 4 | 0 | 0.75 [{low:.2f}, {high:.2f}] | 1.00" in to_markdown(
        summary
    )
    assert "label/judge/human_win_rate" not in metrics(summary | {"served": None})


def test_the_eval_stage_reports_the_label_files_comparisons(tmp_path, make_cfg):
    labels = tmp_path / "judged.jsonl"
    labels.write_text("".join(json.dumps(judged(f"p{i}", "a" if i else "tie")) + "\n" for i in range(5)))
    (tmp_path / "summary.md").write_text("| policy |\n")
    found = evaluate.write_judged(str(labels), tmp_path)
    assert found["eval/judged/human_win_rate"] == 0.9 == comparisons_in(labels)[0]["human"]
    assert "People as the judge" in (tmp_path / "summary.md").read_text()
    assert json.loads((tmp_path / "judged.json").read_text())[0]["prompts"] == 5

    plain = evaluate.key_config(make_cfg("stage=eval"))
    assert "judged" not in plain["eval"] and "judged_sha256" not in plain["eval"]  # other keys unchanged
    keyed = evaluate.key_config(make_cfg("stage=eval", f"eval.judged={labels}"))
    labels.write_text(labels.read_text() + json.dumps(judged("p9", "b")) + "\n")
    assert evaluate.key_config(make_cfg("stage=eval", f"eval.judged={labels}")) != keyed  # new labels
    missing = make_cfg("stage=eval", f"eval.judged={tmp_path / 'none.jsonl'}")
    assert list(evaluate.check(missing)) == [f"eval.judged: {tmp_path / 'none.jsonl'}: no such label file"]
    empty = tmp_path / "pairs.jsonl"
    empty.write_text(
        json.dumps(judged("p0", "a") | {"comparison": None, "policy_a": None, "policy_b": None}) + "\n"
    )
    with pytest.raises(LabelFileError, match="no judged blind comparison in it"):
        comparisons_in(empty)


def test_the_winrate_command_prints_the_table_and_json(tmp_path, capsys):
    labels = tmp_path / "judged.jsonl"
    labels.write_text("".join(json.dumps(judged(f"p{i}", "ab"[i % 2])) + "\n" for i in range(6)))
    judge.main([str(labels), "--json"])
    assert json.loads(capsys.readouterr().out)[0]["human"] == 0.5
    judge.main([str(labels)])
    assert "| people: A wins (95% CI) |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="rlhf-lab-winrate: .*no such label file"):
        judge.main([str(tmp_path / "none.jsonl")])


# ------------------------------------------------------------------------------ the run viewer
def test_the_viewer_scores_each_sample_with_the_gold_and_reads_each_steps_kl(tmp_path):
    a, _, prompts = two_policies(tmp_path)
    gold = GoldScorer("reader")
    data = run_data(Source("rl_a", "", a), "reader", gold)
    assert [s["step"] for s in data["steps"]] == [0, 3] and data["steps"][1]["kl"] == 1.5
    assert len(data["prompts"]) == 10 and data["prompts"][0]["prompt"] == prompts[0]
    samples = data["prompts"][0]["samples"]
    assert [s["step"] for s in samples] == [0, 3]
    assert samples[1]["gold"] == pytest.approx(gold.score(prompts[:1], [samples[1]["completion"]]).item())


def test_the_viewer_page_embeds_its_data_safely_and_names_the_missing_gold(tmp_path):
    hostile = "</script><script>window.pwned=1</script>"
    folder = write_run(tmp_path / "rl", {0: [("p " + hostile, " a")], 1: [("p " + hostile, " b " + hostile)]})
    page = view(folder, tmp_path / "v.html", gold="vader").read_text()
    assert page.count("<script") == 2 and "window.pwned=1</script>" not in page  # the data stays data
    script = re.search(r"<script>(.*)</script>", page, re.S)[1]
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in page  # the page's own script, and nothing else, may run
    with pytest.raises(
        UserError, match="no manifest.json to say which gold the run trained with; give --gold"
    ):
        view(folder, tmp_path / "w.html")
