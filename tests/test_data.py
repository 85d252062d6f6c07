"""Data entry: TRL formats through `datasets`, and bad rows named by file, row and field."""

from __future__ import annotations

import json

import datasets
import pytest

from rlhf_lab.config import DataConfig, SourceConfig
from rlhf_lab.data.formats import Example, detect_format, read_examples
from rlhf_lab.data.lm import LMDataModule, collate, tokenize_pairs
from rlhf_lab.data.sources import DataError
from rlhf_lab.tensors import IGNORE
from rlhf_lab.world.tokenizer import train_tokenizer
from tests.helpers import write_jsonl

TEXTS = ["The film was great and the acting was superb.", "I hated the dull plot of the movie."] * 50


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS, vocab_size=300)


def src(path, fmt="auto"):
    return SourceConfig(path=str(path), format=fmt)


GOOD = {"prompt": "The film", "completion": " was great."}


@pytest.mark.parametrize(
    ("row", "field", "reason"),
    [
        ({"prompt": "The film"}, "completion", "missing"),
        ({"prompt": "The film", "completion": "   "}, "completion", "empty"),
        ({"prompt": "The film", "completion": None}, "completion", "missing"),
        ({"prompt": ["The film"], "completion": " was great."}, "prompt", "got list"),
    ],
)
def test_bad_row_error_names_file_row_and_field(tmp_path, tokenizer, row, field, reason):
    path = write_jsonl(tmp_path / "pairs.jsonl", [GOOD, GOOD, row, GOOD])
    with pytest.raises(DataError) as info:
        read_examples(src(path, "prompt_completion"), None, tokenizer, "error")
    message = str(info.value)
    assert str(path) in message and "row 2" in message and f"'{field}'" in message and reason in message


def test_wrong_type_is_caught_before_arrow(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "pairs.jsonl", [GOOD, {"prompt": 7, "completion": " x"}])
    with pytest.raises(DataError, match=r"row 1, field 'prompt': expected str .* got int"):
        read_examples(src(path), None, tokenizer, "error")


def test_invalid_json_and_utf8_name_the_row(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "broken.jsonl", [GOOD, '{"prompt": "a", '])
    with pytest.raises(DataError, match=r"broken.jsonl: row 1: invalid JSON"):
        read_examples(src(path), None, tokenizer, "error")
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b'\n{"prompt": "caf\xe9", "completion": "x"}\n')
    with pytest.raises(DataError, match=r"latin1.jsonl: row 1: invalid UTF-8"):
        read_examples(src(path), None, tokenizer, "error")


def test_skip_drops_and_counts_bad_rows(tmp_path, tokenizer, caplog):
    path = write_jsonl(
        tmp_path / "pairs.jsonl", [GOOD, {"prompt": "x", "completion": ""}, GOOD, {"prompt": "y"}]
    )
    examples, _ = read_examples(src(path), None, tokenizer, "skip")
    assert examples == [Example("The film", " was great.")] * 2
    assert "skipped 2 of 4 rows" in caplog.text and "row 1" in caplog.text


def test_all_bad_rows_is_an_error_even_when_skipping(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "x", "completion": ""}])
    with pytest.raises(DataError, match="every one of its 1 rows is bad"):
        read_examples(src(path), None, tokenizer, "skip")


def test_messages_are_rendered_with_the_chat_template(tmp_path, tokenizer):
    rows = [
        {"messages": [{"role": "user", "content": "Review it"}, {"role": "assistant", "content": "Great."}]}
    ]
    examples, _ = read_examples(src(write_jsonl(tmp_path / "chat.jsonl", rows)), None, tokenizer, "error")
    assert examples == [Example("user: Review it\nassistant:", " Great.\n")]
    bad = [{"messages": [{"role": "assistant", "content": "Hi"}, {"role": "user", "content": "Bye"}]}]
    with pytest.raises(DataError, match=r"row 0, field 'messages\[1\].role'"):
        read_examples(src(write_jsonl(tmp_path / "bad.jsonl", bad)), None, tokenizer, "error")


def test_parquet_and_save_to_disk_load_like_jsonl(tmp_path, tokenizer):
    ds = datasets.Dataset.from_list([GOOD] * 3)
    ds.to_parquet(str(tmp_path / "pairs.parquet"))
    ds.save_to_disk(str(tmp_path / "saved"))
    for path in (tmp_path / "pairs.parquet", tmp_path / "saved"):
        examples, _ = read_examples(src(path), None, tokenizer, "error")
        assert examples == [Example("The film", " was great.")] * 3


def test_unknown_format_and_missing_file_are_clear(tmp_path, tokenizer):
    assert detect_format(["text", "meta"]) == "text"
    with pytest.raises(DataError, match="cannot tell the row format"):
        detect_format(["question", "answer"])
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(DataError, match="unknown file type '.txt'"):
        read_examples(src(tmp_path / "a.txt"), None, tokenizer, "error")


def test_tokenized_pairs_train_on_the_response_and_eos_only(tokenizer):
    data = DataConfig(max_length=12, max_prompt_length=6)
    [row] = tokenize_pairs(
        [Example("The film", " was great and the acting was superb superb superb.")], tokenizer, data, "mem"
    )
    prompt_len = len(tokenizer("The film")["input_ids"])
    assert len(row["input_ids"]) == 12  # the response is cut to fit max_length
    assert row["labels"][:prompt_len] == [IGNORE] * prompt_len
    assert row["labels"][prompt_len:] == row["input_ids"][prompt_len:]
    assert row["input_ids"][-1] == tokenizer.eos_token_id


def test_an_over_long_prompt_keeps_its_last_tokens_in_every_stage(tokenizer, caplog):
    """The one long-prompt rule (data.prompts.encode_prompts): SFT pairs and sampled prompts alike keep
    the last data.max_prompt_length tokens, and the log says how many were cut."""
    from rlhf_lab.data.prompts import encode_prompts

    data = DataConfig(max_length=40, max_prompt_length=3)
    long_prompt = "The film was great"
    full = tokenizer(long_prompt)["input_ids"]
    assert len(full) > 3
    with caplog.at_level("INFO", logger="rlhf_lab.data.prompts"):
        short, cut = tokenize_pairs(
            [Example("The", " x."), Example(long_prompt, " y.")], tokenizer, data, "mem"
        )
    assert "mem: 1 of 2 prompts are longer than data.max_prompt_length=3" in caplog.text
    assert cut["input_ids"][:3] == full[-3:] and cut["labels"][:3] == [IGNORE] * 3
    assert short["input_ids"][: len(tokenizer("The")["input_ids"])] == tokenizer("The")["input_ids"]
    assert encode_prompts(tokenizer, ["The", long_prompt], 3) == [tokenizer("The")["input_ids"], full[-3:]]
    assert encode_prompts(tokenizer, [long_prompt], None) == [full]


def test_collate_right_pads_with_ignored_labels():
    batch = collate([{"input_ids": [5, 6, 7], "labels": [IGNORE, 6, 7]}, {"input_ids": [8]}], pad_token_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7], [8, IGNORE, IGNORE]]


def test_pretraining_blocks_cover_the_token_stream(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "docs.jsonl", [{"text": t} for t in TEXTS])
    dm = LMDataModule(
        src(path, "text"), None, tokenizer, DataConfig(max_length=16, val_size=10), 4, "pack", 0
    )
    dm.setup()
    assert all(len(r["input_ids"]) == 16 for r in dm.train_rows[:-1])
    n_tokens = sum(len(tokenizer(t)["input_ids"]) + 1 for t in TEXTS)
    assert sum(len(r["input_ids"]) for r in dm.train_rows + dm.val_rows) == n_tokens
    assert next(iter(dm.train_dataloader()))["input_ids"].shape == (4, 16)


def test_extra_columns_are_named_once_and_ignored(tmp_path, tokenizer, caplog):
    path = write_jsonl(tmp_path / "pairs.jsonl", [dict(GOOD, id=1, source="web")] * 3)
    examples, _ = read_examples(src(path), None, tokenizer, "error")
    assert examples == [Example("The film", " was great.")] * 3
    assert caplog.text.count("columns ['id', 'source'] are not part of the prompt_completion format") == 1
