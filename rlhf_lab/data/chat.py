"""Conversations as text: the one rendering rule of every format and every stage.

A conversational value is a list of messages `{"role", "content"}` (TRL's conversational format). It is
turned into text with a tokenizer's chat template, at the point where the tokenizer is known:

- a **prompt** is rendered with the generation prompt appended (`add_generation_prompt=True`): what the
  policy continues when it samples, and the prompt part of a training example;
- a **completion** is the assistant turn(s) that follow a prompt: the text of prompt + completion
  rendered as one conversation, minus the rendered prompt (so a template's end-of-turn marks belong
  to the completion and carry the loss);
- an **implicit prompt** is the beginning chosen and rejected share: whole messages for conversations,
  whole words for plain strings (`split_implicit`).

A template that writes the BOS token itself (`{{ bos_token }}`) would get a second one from a tokenizer
that adds BOS on its own; the rendered text leaves it out, so `tokenizer(text)` gives the template's
tokens. A tokenizer without a chat template gets `plain`: `"\\n\\nHuman: …\\n\\nAssistant:"`, the layout
of Anthropic's HH-RLHF transcripts, which base language models continue. Reward models re-tokenize
text and render a conversational prompt with their own template (`scorers.RewardModelScorer`), gold
scorers judge the text the completion continues (`prompt_text`: the last message's content).
"""

from __future__ import annotations

import functools
import logging

from rlhf_lab.data.sources import BadRow

log = logging.getLogger(__name__)
ROLES = ("system", "user", "assistant", "tool")
PLAIN_NAMES = {"system": "System", "user": "Human", "assistant": "Assistant", "tool": "Tool"}

Message = dict[str, str]
Prompt = str | list[Message]  # a plain prompt, or a conversation the policy answers as the assistant


def is_conversation(value) -> bool:
    """A list (of messages): TRL's conversational format, as opposed to a plain string."""
    return isinstance(value, list)


def check_messages(value, field: str, min_length: int = 1) -> list[Message]:
    """A validated copy of a list of {role, content} messages (other keys dropped); raises BadRow
    naming the message (`chosen[2].role`) for a missing or unknown role or a missing or empty content."""
    if not isinstance(value, list):
        raise BadRow(field, f"expected a list of {{role, content}} messages, got {type(value).__name__}")
    if len(value) < min_length:
        raise BadRow(field, f"expected at least {min_length} message(s), got {len(value)}")
    messages = []
    for i, message in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(message, dict):
            raise BadRow(where, f"expected a {{role, content}} object, got {type(message).__name__}")
        role, content = message.get("role"), message.get("content")
        if role is None:
            raise BadRow(f"{where}.role", "missing")
        if role not in ROLES:
            raise BadRow(f"{where}.role", f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
        if content is None:
            raise BadRow(f"{where}.content", "missing")
        if not isinstance(content, str):
            raise BadRow(f"{where}.content", f"expected a string, got {type(content).__name__}")
        if not content.strip():
            raise BadRow(f"{where}.content", "empty")
        messages.append({"role": role, "content": content})
    return messages


def plain(messages: list[Message], generation_prompt: bool) -> str:
    """The conversation as HH-RLHF writes it: `\\n\\nHuman: …\\n\\nAssistant: …` (+ `\\n\\nAssistant:`)."""
    text = "".join(f"\n\n{PLAIN_NAMES[m['role']]}: {m['content']}" for m in messages)
    return text + ("\n\nAssistant:" if generation_prompt else "")


def _render(tokenizer, messages: list[Message], generation_prompt: bool) -> str:
    if tokenizer is None:
        raise ValueError("rendering a conversation needs the tokenizer whose chat template applies")
    if not getattr(tokenizer, "chat_template", None):
        _say_plain(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)
        return plain(messages, generation_prompt)
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    bos = tokenizer.bos_token
    if bos and text.startswith(bos) and _adds_bos(tokenizer):
        text = text[len(bos) :]  # tokenizer(text) puts it back: one BOS, not two
    return text


@functools.cache
def _say_plain(name: str) -> None:
    log.warning("%s has no chat template: conversations are rendered as plain '\\n\\nHuman: ...' text", name)


def _adds_bos(tokenizer) -> bool:
    ids = tokenizer("x")["input_ids"]
    return bool(ids) and ids[0] == tokenizer.bos_token_id


def render_prompt(tokenizer, messages: list[Message]) -> str:
    """A conversational prompt as the text the policy continues: the template + the generation prompt."""
    return _render(tokenizer, messages, generation_prompt=True)


def render_completion(tokenizer, prompt: list[Message], completion: list[Message]) -> tuple[str, str]:
    """(prompt text, completion text): the completion is what rendering prompt + completion adds to the
    rendered prompt (generation prompt included). ValueError when the template does not render the
    prompt as a prefix of the whole conversation."""
    head = render_prompt(tokenizer, prompt)
    full = _render(tokenizer, prompt + completion, generation_prompt=False)
    if not full.startswith(head):
        raise ValueError(
            "the chat template does not render the prompt (with its generation prompt) as the beginning "
            "of prompt + completion, so the completion cannot be cut from it"
        )
    return head, full[len(head) :]


def render(tokenizer, prompt: Prompt) -> str:
    """A prompt as text: a string as it is, a conversation through `render_prompt`."""
    return render_prompt(tokenizer, prompt) if is_conversation(prompt) else prompt


def render_scored(tokenizer, prompt: Prompt, completion: str) -> tuple[str, str]:
    """(prompt, completion) as a scorer reads them: a sampled completion of a conversational prompt is
    the assistant's reply, rendered with `tokenizer`'s template; a plain prompt's pair is unchanged."""
    if not is_conversation(prompt):
        return prompt, completion
    return render_completion(tokenizer, prompt, [{"role": "assistant", "content": completion}])


def prompt_text(prompt: Prompt) -> str:
    """The text a completion continues, for scorers that read words (gold): the prompt itself, or the
    content of a conversation's last message."""
    return prompt[-1]["content"] if is_conversation(prompt) else prompt


def display(prompt: Prompt) -> str:
    """A prompt for people and for keys (sample tables, labelers): a string, or `plain` of a conversation."""
    return plain(prompt, generation_prompt=True).lstrip("\n") if is_conversation(prompt) else prompt


def as_completion(prompt: Prompt, text: str):
    """A sampled completion in the prompt's format: an assistant message list for a conversation."""
    return [{"role": "assistant", "content": text}] if is_conversation(prompt) else text


def split_implicit(chosen, rejected):
    """(prompt, chosen, rejected) of a pair whose prompt is the beginning chosen and rejected share.

    Conversations share whole messages, and the two completions must begin with the assistant's turn;
    strings share whole words (the cut falls on the whitespace before the first difference, which starts
    each completion, as in `{"prompt": "The sky is", "chosen": " blue."}`). Raises BadRow when nothing
    is shared or one side has nothing after it.
    """
    if is_conversation(chosen):
        n = 0
        while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
            n += 1
        cut = (chosen[:n], chosen[n:], rejected[n:])
    else:
        n = next((i for i, (a, b) in enumerate(zip(chosen, rejected, strict=False)) if a != b), None)
        n = min(len(chosen), len(rejected)) if n is None else n
        n = max((i for i in range(n) if chosen[i].isspace()), default=0)  # the last shared whitespace
        cut = (chosen[:n], chosen[n:], rejected[n:])
    prompt, chosen_rest, rejected_rest = cut
    if not prompt or (not is_conversation(prompt) and not prompt.strip()):
        raise BadRow("rejected", "shares no beginning with 'chosen': the implicit prompt would be empty")
    for field, rest in (("chosen", chosen_rest), ("rejected", rejected_rest)):
        if not rest or (not is_conversation(rest) and not rest.strip()):
            raise BadRow(field, "is the shared beginning itself: nothing of it is left as a completion")
        if is_conversation(rest) and rest[0]["role"] != "assistant":
            raise BadRow(
                f"{field}[{n}].role",
                f"the first message after the shared beginning is the {rest[0]['role']}'s; "
                "a completion must begin with the assistant's turn",
            )
    return prompt, chosen_rest, rejected_rest
