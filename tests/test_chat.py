"""Chat rendering (`data.chat`): what is prompt, what is completion, where the loss falls; implicit
prompts; and every bad row of the conversational layouts named by file, row and field."""

from __future__ import annotations

import dataclasses
import json

import pytest

from rlhf_lab.config import DataConfig, SourceConfig
from rlhf_lab.data.chat import plain, render_completion, render_prompt, render_scored, split_implicit
from rlhf_lab.data.formats import PARSERS, Example, PreferencePair, read_examples, read_prompts, rendered
from rlhf_lab.data.lm import tokenize_pairs
from rlhf_lab.data.prompts import encode_prompts
from rlhf_lab.data.reward_inputs import reward_inputs
from rlhf_lab.data.sources import BadRow, DataError
from rlhf_lab.tensors import IGNORE
from rlhf_lab.world.tokenizer import CONVERSATION_TEMPLATE, train_tokenizer
from tests.helpers import write_jsonl

TEXTS = ["The film was great and the acting was superb.", "I hated the dull plot of the movie."] * 50
USER = [{"role": "user", "content": "The film"}]
REPLY = [{"role": "assistant", "content": " was great."}]


@pytest.fixture(scope="module")
def tokenizer():
    """The conversational tiny world's template: `role: content` turns, assistant turns end with EOS."""
    return train_tokenizer(TEXTS, vocab_size=300, chat_template=CONVERSATION_TEMPLATE)


def test_a_prompt_ends_with_the_generation_prompt(tokenizer):
    assert render_prompt(tokenizer, USER) == "user: The film\nassistant:"
    two_turns = [*USER, {"role": "assistant", "content": " was fine."}, {"role": "user", "content": "And?"}]
    assert (
        render_prompt(tokenizer, two_turns)
        == "user: The film\nassistant: was fine.</s>user: And?\nassistant:"
    )


def test_a_completion_is_the_assistant_turns_that_follow_the_prompt(tokenizer):
    assert render_completion(tokenizer, USER, REPLY) == ("user: The film\nassistant:", " was great.</s>")
    more = [*REPLY, {"role": "user", "content": "Why?"}, {"role": "assistant", "content": " The cast."}]
    prompt, completion = render_completion(tokenizer, USER, more)
    assert prompt == "user: The film\nassistant:"
    assert completion == " was great.</s>user: Why?\nassistant: The cast.</s>"
    # a scorer's sampled reply is the assistant's turn, rendered the same way; a plain prompt is left alone
    assert render_scored(tokenizer, USER, " was great.") == (prompt, " was great.</s>")
    assert render_scored(tokenizer, "The film", " was great.") == ("The film", " was great.")


def test_the_loss_falls_on_the_completion_and_its_end_of_turn_only(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "chat.jsonl", [{"prompt": USER, "completion": REPLY}])
    [example], _ = read_examples(SourceConfig(path=str(path)), None, tokenizer, "error")
    assert example == Example("user: The film\nassistant:", " was great.</s>")
    [row] = tokenize_pairs([example], tokenizer, DataConfig(max_length=64, max_prompt_length=32), "mem")
    prompt_ids = tokenizer("user: The film\nassistant:")["input_ids"]
    n = len(prompt_ids)
    assert row["input_ids"][:n] == prompt_ids and row["labels"][:n] == [IGNORE] * n
    trained = row["labels"][n:]
    assert trained == row["input_ids"][n:] and trained.count(tokenizer.eos_token_id) == 1  # one EOS, last
    assert tokenizer.decode(trained) == " was great.</s>"
    # the reward model's batch ends in one EOS too
    batch = reward_inputs(tokenizer, [example.prompt], [example.completion], 64)
    ids = batch["input_ids"][0][batch["attention_mask"][0].bool()].tolist()
    assert ids == tokenizer(example.prompt + " was great.")["input_ids"] + [tokenizer.eos_token_id]


def test_a_template_that_writes_bos_gives_one_bos(tokenizer):
    with_bos = train_tokenizer(TEXTS, vocab_size=300, chat_template="{{ bos_token }}" + CONVERSATION_TEMPLATE)
    [ids] = encode_prompts(with_bos, [USER], None)
    assert ids.count(with_bos.bos_token_id) == 1 and ids[0] == with_bos.bos_token_id
    assert ids == encode_prompts(tokenizer, [USER], None)[0]


def test_a_tokenizer_without_a_template_renders_hh_style_text():
    bare = train_tokenizer(TEXTS, vocab_size=300)
    bare.chat_template = None
    assert render_prompt(bare, USER) == "\n\nHuman: The film\n\nAssistant:"
    reply = [{"role": "assistant", "content": "Great."}]
    assert render_completion(bare, USER, reply) == ("\n\nHuman: The film\n\nAssistant:", " Great.")
    assert plain([*USER, *reply], generation_prompt=False) == "\n\nHuman: The film\n\nAssistant: Great."


def test_the_implicit_prompt_is_the_shared_beginning():
    chosen = [*USER, {"role": "assistant", "content": "Good."}]
    rejected = [*USER, {"role": "assistant", "content": "Bad."}]
    assert split_implicit(chosen, rejected) == (USER, chosen[1:], rejected[1:])
    # strings share whole words: the completions begin at the whitespace before the first difference
    assert split_implicit("The sky is blue.", "The sky is green.") == ("The sky is", " blue.", " green.")
    assert split_implicit("The sky is blue", "The sky isn't blue") == ("The sky", " is blue", " isn't blue")


def test_prompts_stay_conversations_until_the_policy_renders_them(tmp_path, tokenizer):
    rows = [{"prompt": USER}, {"prompt": [{"role": "system", "content": "Be kind."}, *USER]}]
    prompts, _ = read_prompts(SourceConfig(path=str(write_jsonl(tmp_path / "p.jsonl", rows))), None, "error")
    assert prompts == [USER, rows[1]["prompt"]]
    assert encode_prompts(tokenizer, prompts[:1], None) == [
        tokenizer("user: The film\nassistant:")["input_ids"]
    ]


def test_conversational_preferences_render_prompt_and_both_replies(tmp_path, tokenizer):
    chosen, rejected = [*USER, *REPLY], [*USER, {"role": "assistant", "content": " was dull."}]
    explicit = {"prompt": USER, "chosen": REPLY, "rejected": rejected[1:]}
    for row in (explicit, {"chosen": chosen, "rejected": rejected}):
        path = write_jsonl(tmp_path / "prefs.jsonl", [row])
        [pair], _ = read_examples(SourceConfig(path=str(path)), None, tokenizer, "error")
        assert pair == PreferencePair("user: The film\nassistant:", " was great.</s>", " was dull.</s>")


# ------------------------------------------------------------------------------ bad rows
def message(role="user", content="Hi"):
    return {"role": role, "content": content}


GOOD = {
    "prompt": [message()],
    "chosen": [message("assistant", "Yes.")],
    "rejected": [message("assistant", "No.")],
}
BAD_ROWS = {
    "a message without a role": (
        {**GOOD, "chosen": [{"content": "Yes."}]},
        "chosen[0].role",
        "missing",
    ),
    "an unknown role": ({**GOOD, "prompt": [message("bot")]}, "prompt[0].role", "unknown role 'bot'"),
    "empty content": ({**GOOD, "rejected": [message("assistant", "  ")]}, "rejected[0].content", "empty"),
}
IMPLICIT = {
    "chosen": [message(), message("assistant", "Yes.")],
    "rejected": [message(), message("assistant", "No.")],
}
BAD_IMPLICIT = {
    "no shared beginning": (
        {"chosen": [message("user", "A"), message("assistant", "Yes.")], "rejected": IMPLICIT["rejected"]},
        "rejected",
        "shares no beginning with 'chosen'",
    ),
    "a completion that starts with the user's turn": (
        {
            "chosen": [message(), message("assistant", "Ok."), message("user", "More?")],
            "rejected": [message(), message("assistant", "Ok."), message("user", "Less?")],
        },
        "chosen[2].role",
        "must begin with the assistant's turn",
    ),
    "one side is the shared beginning itself": (
        {"chosen": [message(), message("assistant", "Yes.")], "rejected": [message()]},
        "rejected",
        "nothing of it is left as a completion",
    ),
}
BAD_STRINGS = {
    "strings with no shared word": (
        {"chosen": "Yes, it was.", "rejected": "No, it was not."},
        "rejected",
        "shares no beginning",
    ),
}


@pytest.mark.parametrize(
    ("good", "bad", "field", "reason"),
    [(GOOD, *v) for v in BAD_ROWS.values()]
    + [(IMPLICIT, *v) for v in BAD_IMPLICIT.values()]
    + [({"chosen": "It was good.", "rejected": "It was bad."}, *v) for v in BAD_STRINGS.values()],
    ids=[*BAD_ROWS, *BAD_IMPLICIT, *BAD_STRINGS],
)
def test_a_bad_conversational_row_names_file_row_and_field(tmp_path, tokenizer, good, bad, field, reason):
    path = write_jsonl(tmp_path / "prefs.jsonl", [good, good, bad])
    with pytest.raises(DataError) as info:
        read_examples(SourceConfig(path=str(path)), None, tokenizer, "error")
    text = str(info.value)
    assert text.startswith(f"{path}: row 2, field '{field}': ") and reason in text, text
    pairs, _ = read_examples(SourceConfig(path=str(path)), None, tokenizer, "skip")  # or skipped and counted
    assert len(pairs) == 2


def test_a_conversation_needs_its_last_turn_to_be_the_assistants(tmp_path, tokenizer):
    path = write_jsonl(
        tmp_path / "lm.jsonl", [{"messages": [message("assistant", "Hi"), message("user", "Bye")]}]
    )
    with pytest.raises(DataError, match=r"row 0, field 'messages\[1\].role': the last message must be"):
        read_examples(SourceConfig(path=str(path)), None, tokenizer, "error")


def test_a_template_that_does_not_extend_the_prompt_is_a_bad_row(tokenizer):
    odd = train_tokenizer(TEXTS, vocab_size=300, chat_template="{% if add_generation_prompt %}X{% endif %}Y")
    with pytest.raises(ValueError, match="does not render the prompt"):
        render_completion(odd, USER, REPLY)
    with pytest.raises(BadRow, match="field 'completion': the chat template does not render"):
        rendered(PARSERS["prompt_completion"]({"prompt": USER, "completion": REPLY}), odd)


def test_every_field_of_a_row_has_one_form():
    with pytest.raises(BadRow, match="field 'rejected': expected a string like 'chosen', got list"):
        PARSERS["preference"]({**GOOD, "chosen": "Yes."})
    with pytest.raises(BadRow, match="field 'completion': expected a string like 'prompt', got list"):
        PARSERS["prompt_completion"]({"prompt": "The film", "completion": REPLY})


def test_worlds_built_before_the_conversational_setting_keep_their_key():
    from rlhf_lab.artifacts import config_hash
    from rlhf_lab.config import WorldConfig
    from rlhf_lab.world import world_key

    settings = dataclasses.asdict(WorldConfig())
    settings = {k: v for k, v in settings.items() if k not in ("conversational", "sizes")}
    assert world_key(WorldConfig()) == config_hash(settings)
    assert world_key(WorldConfig(conversational=True)) != world_key(WorldConfig())


@pytest.mark.slow
def test_the_conversational_world_holds_the_same_texts_as_chat_data(lab_home):
    """world.conversational=true: the default world's texts as user/assistant messages, and a tokenizer
    whose template ends assistant turns with EOS."""
    from transformers import AutoTokenizer

    from rlhf_lab.config import validate
    from rlhf_lab.world import build_world
    from tests.helpers import compose_config

    plain_cfg, chat_cfg = validate(compose_config()), validate(compose_config("world.conversational=true"))
    plain = build_world(plain_cfg.world, plain_cfg.paths.world)
    chat = build_world(chat_cfg.world, chat_cfg.paths.world)
    for name in ("sft", "prompts", "eval_prompts"):
        before = [json.loads(line) for line in getattr(plain, name).open()]
        after = [json.loads(line) for line in getattr(chat, name).open()]
        assert [r["prompt"] for r in after] == [[{"role": "user", "content": r["prompt"]}] for r in before]
        if name == "sft":
            assert [r["completion"][0]["content"] for r in after] == [r["completion"] for r in before]
    assert AutoTokenizer.from_pretrained(chat.init_model).chat_template == CONVERSATION_TEMPLATE
