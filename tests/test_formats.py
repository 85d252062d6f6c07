"""Every TRL format in its standard and conversational form, auto-detected and logged; the classic
datasets' native layouts (hand-written fixtures in tests/fixtures/presets/, laid out as their cards
show) read by name and by auto-detection; their bad rows; and a hub that cannot be reached."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rlhf_lab.config import SourceConfig, validate
from rlhf_lab.data.formats import Example, PreferencePair, read_examples, read_prompts
from rlhf_lab.data.sources import DataError
from rlhf_lab.world.tokenizer import CONVERSATION_TEMPLATE, train_tokenizer
from tests.helpers import compose_config, write_jsonl

FIXTURES = Path(__file__).parent / "fixtures" / "presets"
PRESETS = {  # data=<preset>: the source it sets to a fixture, and the layout of that fixture
    "hh_rlhf": ("preferences", "hh_rlhf"),
    "tldr": ("preferences", "summarize_comparisons"),
    "ultrafeedback": ("preferences", "ultrafeedback"),
    "shp": ("preferences", "shp"),
}
U = [{"role": "user", "content": "The sky is"}]
A = [{"role": "assistant", "content": " blue."}]
B = [{"role": "assistant", "content": " green."}]
TRL = {  # kind: (row, what the log says)
    "standard language modeling": ({"text": "The sky is blue."}, "text rows, standard"),
    "conversational language modeling": ({"messages": U + A}, "messages rows, conversational"),
    "standard prompt-only": ({"prompt": "The sky is"}, "prompt rows, standard"),
    "conversational prompt-only": ({"prompt": U}, "prompt rows, conversational"),
    "standard prompt-completion": (
        {"prompt": "The sky is", "completion": " blue."},
        "prompt_completion rows, standard",
    ),
    "conversational prompt-completion": (
        {"prompt": U, "completion": A},
        "prompt_completion rows, conversational",
    ),
    "standard preference": (
        {"prompt": "The sky is", "chosen": " blue.", "rejected": " green."},
        "preference rows, standard",
    ),
    "standard implicit preference": (
        {"chosen": "The sky is blue.", "rejected": "The sky is green."},
        "implicit prompt",
    ),
    "conversational preference": (
        {"prompt": U, "chosen": A, "rejected": B},
        "preference rows, conversational",
    ),
    "conversational implicit preference": (
        {"chosen": U + A, "rejected": U + B},
        "conversational (message lists, rendered with the chat template), implicit prompt",
    ),
}
PROMPT = "user: The sky is\nassistant:"  # U rendered with its generation prompt
EXPECTED = {
    "standard language modeling": Example("", "The sky is blue."),
    "conversational language modeling": Example(PROMPT, " blue.</s>"),
    "standard prompt-only": Example("The sky is", ""),
    "conversational prompt-only": Example(PROMPT, ""),
    "standard prompt-completion": Example("The sky is", " blue."),
    "conversational prompt-completion": Example(PROMPT, " blue.</s>"),
    "standard preference": PreferencePair("The sky is", " blue.", " green."),
    "standard implicit preference": PreferencePair("The sky is", " blue.", " green."),
    "conversational preference": PreferencePair(PROMPT, " blue.</s>", " green.</s>"),
    "conversational implicit preference": PreferencePair(PROMPT, " blue.</s>", " green.</s>"),
}


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(["The sky is blue.", "The grass is green."] * 50, 300, CONVERSATION_TEMPLATE)


@pytest.mark.parametrize("kind", list(TRL))
def test_every_trl_format_is_detected_logged_and_rendered(tmp_path, tokenizer, caplog, kind):
    row, said = TRL[kind]
    path = write_jsonl(tmp_path / "rows.jsonl", [row, row])
    with caplog.at_level("INFO", logger="rlhf_lab.data.formats"):
        examples, name = read_examples(SourceConfig(path=str(path)), None, tokenizer, "error")
    assert examples == [EXPECTED[kind]] * 2
    assert f"{path}: " in caplog.text and said in caplog.text and "detected from the columns" in caplog.text
    if "language modeling" in kind and "standard" in kind:
        with pytest.raises(DataError, match="'text' rows have no prompt"):
            read_prompts(SourceConfig(path=str(path)), None, "error")
        return
    prompts, _ = read_prompts(SourceConfig(path=str(path), format="prompt"), None, "error")
    assert prompts == [U if "conversational" in kind else "The sky is"] * 2


@pytest.mark.parametrize("fixture", sorted(p.stem for p in FIXTURES.glob("*.jsonl")))
def test_each_classic_layout_is_recognized_from_its_columns(tokenizer, caplog, fixture):
    """data=files (format auto) and the layout's own name read a fixture alike."""
    path = FIXTURES / f"{fixture}.jsonl"
    source = "sft" if fixture == "tldr_sft" else "preferences"
    cfg = validate(compose_config("data=files", f"data.{source}.path={path}"))
    assert getattr(cfg.data, source).format == "auto"
    with caplog.at_level("INFO", logger="rlhf_lab.data.formats"):
        auto, _ = read_examples(getattr(cfg.data, source), None, tokenizer, "error")
    assert f"(format {fixture})" in caplog.text
    named, _ = read_examples(SourceConfig(path=str(path), format=fixture), None, tokenizer, "error")
    assert auto == named and len(auto) == 6


def rows_of(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / f"{name}.jsonl").open()]


def read(
    name: str, tokenizer, rows: list[dict] | None = None, tmp_path: Path | None = None, fmt: str = "auto"
):
    path = FIXTURES / f"{name}.jsonl" if rows is None else write_jsonl(tmp_path / f"{name}.jsonl", rows)
    return read_examples(SourceConfig(path=str(path), format=fmt), None, tokenizer, "error")[0]


def test_hh_rlhf_transcripts_become_conversations_with_an_implicit_prompt(tokenizer):
    pairs = read("hh_rlhf", tokenizer)
    multi = pairs[2]  # three shared turns, then the replies
    assert multi.prompt == (
        "user: Can you recommend a mystery novel?\nassistant:Do you prefer classic or modern mysteries?</s>"
        "user: Classic, please.\nassistant:"
    )
    assert multi.chosen.startswith("Try The Murder of Roger Ackroyd") and multi.chosen.endswith("</s>")
    assert multi.rejected == "I do not read books.</s>"
    prompts, _ = read_prompts(SourceConfig(path=str(FIXTURES / "hh_rlhf.jsonl")), None, "error")
    assert [m["role"] for m in prompts[2]] == ["user", "assistant", "user"]


def test_summarize_comparisons_follow_the_choice(tokenizer):
    pairs, rows = read("summarize_comparisons", tokenizer), rows_of("summarize_comparisons")
    for pair, row in zip(pairs, rows, strict=True):
        info = row["info"]
        assert (
            pair.prompt
            == f"SUBREDDIT: r/{info['subreddit']}\n\nTITLE: {info['title']}\n\nPOST: {info['post']}\n\nTL;DR:"
        )
        assert pair.chosen == row["summaries"][row["choice"]]["text"]
        assert pair.rejected == row["summaries"][1 - row["choice"]]["text"]
    assert {r["choice"] for r in rows} == {0, 1}
    [sft_row, *_] = read("tldr_sft", tokenizer)
    assert (
        sft_row.prompt == pairs[0].prompt
        and sft_row.completion == " " + rows_of("tldr_sft")[0]["summary"].strip()
    )


def test_ultrafeedback_scores_become_the_margin(tokenizer):
    pairs, rows = read("ultrafeedback", tokenizer), rows_of("ultrafeedback")
    assert [p.margin for p in pairs] == [r["score_chosen"] - r["score_rejected"] for r in rows]
    assert pairs[1].prompt == "user: What is the capital of Australia?\nassistant:"
    assert pairs[1].chosen == "The capital of Australia is Canberra.</s>"


def test_shp_labels_pick_the_preferred_comment(tokenizer):
    pairs, rows = read("shp", tokenizer), rows_of("shp")
    for pair, row in zip(pairs, rows, strict=True):
        a, b = (" " + row["human_ref_A"], " " + row["human_ref_B"])
        assert (pair.chosen, pair.rejected) == ((a, b) if row["labels"] == 1 else (b, a))
        assert pair.prompt == f"POST: {row['history']}\n\nCOMMENT:"
        assert math.isclose(pair.margin, math.log(row["score_ratio"]))
    assert {r["labels"] for r in rows} == {0, 1}


def test_a_trl_format_accepts_a_classic_layout_that_becomes_it(tokenizer):
    """An HH-RLHF file given to the schema's default `format: preference` is read as HH-RLHF."""
    assert read("hh_rlhf", tokenizer, fmt="preference") == read("hh_rlhf", tokenizer)


def _cut_reply(transcript: str) -> str:
    return transcript.rsplit("Assistant:", 1)[0] + "Assistant:"


def _edit(name: str, change) -> list[dict]:
    rows = rows_of(name)
    change(rows[3])
    return rows


BAD_NATIVE = {  # layout, change to row 3, field, reason
    "summarize choice outside 0/1": (
        "summarize_comparisons",
        lambda r: r.update(choice=2),
        "choice",
        "expected 0 or 1",
    ),
    "a summary without text": (
        "summarize_comparisons",
        lambda r: r["summaries"][1].update(text=""),
        "summaries[1].text",
        "empty",
    ),
    "shp label outside 0/1": ("shp", lambda r: r.update(labels=3), "labels", "expected 0 or 1"),
    "shp score ratio below 1": ("shp", lambda r: r.update(score_ratio=0.5), "score_ratio", "expected >= 1"),
    "ultrafeedback chosen scored below rejected": (
        "ultrafeedback",
        lambda r: r.update(score_chosen=1.0),
        "score_chosen",
        "is below score_rejected",
    ),
    "ultrafeedback unknown role": (
        "ultrafeedback",
        lambda r: r["chosen"][1].update(role="bot"),
        "chosen[1].role",
        "unknown role 'bot'",
    ),
    "hh empty reply": (
        "hh_rlhf",
        lambda r: r.update(rejected=_cut_reply(r["rejected"])),
        "rejected[1].content",
        "empty",
    ),
    "hh transcripts with no shared turn": (
        "hh_rlhf",
        lambda r: r.update(chosen="\n\nHuman: Hello?\n\nAssistant: Hi."),
        "rejected",
        "shares no beginning",
    ),
    "tldr post missing": ("tldr_sft", lambda r: r.update(post=None), "post", "missing"),
}


@pytest.mark.parametrize(
    ("layout", "change", "field", "reason"), list(BAD_NATIVE.values()), ids=list(BAD_NATIVE)
)
def test_a_bad_row_of_a_classic_layout_names_file_row_and_field(
    tmp_path, tokenizer, layout, change, field, reason
):
    with pytest.raises(DataError) as info:
        read(layout, tokenizer, _edit(layout, change), tmp_path, fmt=layout)
    assert f"{layout}.jsonl: row 3, field '{field}': " in str(info.value) and reason in str(info.value)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_a_preset_reads_a_local_copy_for_every_source(tokenizer, preset):
    source, layout = PRESETS[preset]
    path = FIXTURES / f"{layout}.jsonl"
    cfg = validate(compose_config(f"data={preset}", f"data.{source}.path={path}", f"data.sft.path={path}"))
    assert getattr(cfg.data, source).format == layout
    pairs, _ = read_examples(getattr(cfg.data, source), None, tokenizer, "error", key=f"data.{source}")
    assert len(pairs) == 6 and all(isinstance(p, PreferencePair) for p in pairs)
    if preset != "tldr":  # the prompts follow the preferences' local copy
        prompts, _ = read_prompts(cfg.data.eval_prompts, None, "error")
        assert len(prompts) == 6


def test_an_unreachable_hub_says_what_to_download_and_where_to_point(monkeypatch):
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # what a machine without network sees
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    cfg = validate(compose_config("data=hh_rlhf"))
    with pytest.raises(DataError) as info:
        read_examples(cfg.data.preferences, None, None, "error", key="data.preferences")
    text = str(info.value)
    assert text.startswith("Anthropic/hh-rlhf: the Hugging Face hub is unreachable")
    assert "save_to_disk" in text and "data.preferences.path=FOLDER" in text
    with pytest.raises(DataError, match=r"missing\.jsonl: no such file or folder \(data.prompts.path\)"):
        read_prompts(SourceConfig(path="missing.jsonl"), None, "error", key="data.prompts")
