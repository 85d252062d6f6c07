"""A byte-level BPE tokenizer trained on the corpus and saved as a standard Hugging Face tokenizer."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS = "<pad>", "<s>", "</s>"

# A minimal chat template so that conversational (`messages`) data works with the tiny world.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] + ': ' + message['content'] + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'assistant:' }}{% endif %}"
)
# The conversational world's template (`world.conversational`): an assistant turn follows `assistant:`
# directly and ends with EOS, as chat models end theirs, so that the world's assistant replies (a
# review's continuation, which begins with a space) render as the same tokens as its plain text.
#   [user "The acting", assistant " was superb."] -> "user: The acting\nassistant: was superb.</s>"
CONVERSATION_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'assistant' %}"
    "{{ 'assistant:' + message['content'] + eos_token }}"
    "{% else %}{{ message['role'] + ': ' + message['content'] + '\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'assistant:' }}{% endif %}"
)


def train_tokenizer(
    texts: Iterable[str], vocab_size: int, chat_template: str = CHAT_TEMPLATE
) -> PreTrainedTokenizerFast:
    """Train byte-level BPE with pad, BOS and EOS special tokens; BOS is prepended to every input.

    Pad is its own token, never EOS (Huang et al. 2024, "N+ implementation details of RLHF").
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        padding_side="left",
        chat_template=chat_template,
        model_max_length=1_000_000,
    )
