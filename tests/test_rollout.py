"""Tests for rlhf_lab.rollout: batched KV-cached generation, log-probs, EOS, sampling, peft."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaForCausalLM,
)

from rlhf_lab.rollout import (
    ResponseStats,
    Rollout,
    generate,
    generate_text,
    pack,
    response_logprobs,
    response_states,
)
from rlhf_lab.rollout.sampling import _sample, _select
from rlhf_lab.tensors import left_pad, position_ids_from_mask
from tests.helpers import tiny_llama

VOCAB, PAD, EOS = 97, 0, 1
LENGTHS = [1, 3, 9, 5, 2, 7]  # batch of 6 prompts of lengths in 1..9


def make_llama(seed: int = 0) -> LlamaForCausalLM:
    return tiny_llama(
        seed,
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        max_position_embeddings=128,
        pad_token_id=None,
    )


def make_gpt2(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=128)
    return GPT2LMHeadModel(cfg).float().eval()


def make_neox(seed: int = 0) -> GPTNeoXForCausalLM:
    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=128,
    )
    return GPTNeoXForCausalLM(cfg).float().eval()


MODELS = {"llama": make_llama, "gpt2": make_gpt2, "neox": make_neox}


def make_prompts(lengths: list[int] = LENGTHS, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(2, VOCAB, (n,), generator=g).tolist() for n in lengths]


def gen(model, prompts: list[list[int]], **kw) -> Rollout:
    ids, mask = left_pad(prompts, PAD)  # (B, P), (B, P)
    kw = {"max_new_tokens": 12, "eos_token_id": EOS, "pad_token_id": PAD, **kw}
    return generate(model, ids, mask, **kw)


def assert_well_formed(r: Rollout) -> None:
    """Masked-out response positions hold pad and log-prob 0; the mask is a prefix of ones."""
    mask = r.response_mask.bool()  # (B, T)
    assert torch.all(r.response_ids[~mask] == PAD)
    assert torch.all(r.logprobs[~mask] == 0)
    assert torch.all(r.logprobs[mask] <= 0)
    assert torch.all(mask[:, 1:] <= mask[:, :-1])  # no 1 after a 0
    assert r.logprobs.dtype == torch.float32


# ----------------------------------------------------------------------------------------------
# padding / positions / container
# ----------------------------------------------------------------------------------------------


def test_left_pad_and_positions() -> None:
    ids, mask = left_pad([[5, 6, 7], [8]], pad_token_id=PAD)
    assert ids.tolist() == [[5, 6, 7], [PAD, PAD, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert position_ids_from_mask(mask).tolist() == [[0, 1, 2], [0, 0, 0]]
    ids, mask = left_pad([], pad_token_id=PAD)
    assert ids.shape == mask.shape == (0, 0)


def test_rollout_properties() -> None:
    r = gen(make_llama(), make_prompts([2, 4]), max_new_tokens=5, do_sample=False)
    assert r.sequences.shape == r.attention_mask.shape == (2, 4 + r.response_ids.shape[1])
    assert torch.equal(r.sequences[:, :4], r.prompt_ids)
    assert torch.equal(r.attention_mask[:, 4:], r.response_mask)
    assert r.lengths().tolist() == r.response_mask.sum(1).tolist()
    assert r.prompt_lengths().tolist() == [2, 4]
    assert torch.equal(r.position_ids[1, :4], torch.arange(4))
    moved = r.to("cpu")
    assert moved.eos_token_id == EOS and torch.equal(moved.logprobs, r.logprobs)
    assert len(r) == 2
    empty = gen(make_llama(), make_prompts([2, 4]), max_new_tokens=0)
    assert empty.response_ids.shape == (2, 0) and not empty.ends_with_eos.any()


def test_rejects_right_padded_prompts() -> None:
    ids = torch.tensor([[5, 6], [7, PAD]])
    mask = torch.tensor([[1, 1], [1, 0]])
    with pytest.raises(ValueError, match="LEFT-padded"):
        generate(make_llama(), ids, mask, max_new_tokens=3, eos_token_id=EOS, pad_token_id=PAD)


# ----------------------------------------------------------------------------------------------
# batching invariance and correctness
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", list(MODELS))
def test_batched_greedy_equals_single(arch: str) -> None:
    model = MODELS[arch]()
    prompts = make_prompts()
    batch = gen(model, prompts, do_sample=False)
    assert_well_formed(batch)
    for i, prompt in enumerate(prompts):
        alone = gen(model, [prompt], do_sample=False)
        width = alone.response_ids.shape[1]  # alone may stop earlier than the batch (EOS)
        assert torch.equal(batch.response_ids[i, :width], alone.response_ids[0])
        assert torch.equal(batch.response_mask[i, :width], alone.response_mask[0])
        assert not batch.response_mask[i, width:].any()
        torch.testing.assert_close(batch.logprobs[i, :width], alone.logprobs[0], atol=1e-4, rtol=0)


def test_greedy_matches_hf_generate() -> None:
    model = make_llama()
    ids, mask = left_pad(make_prompts(), PAD)
    ours = generate(
        model, ids, mask, max_new_tokens=10, eos_token_id=-1, pad_token_id=PAD, do_sample=False
    )  # eos -1: never stops
    with torch.no_grad():
        hf = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=10,
            do_sample=False,
            pad_token_id=PAD,
            eos_token_id=None,
        )
    assert torch.equal(ours.response_ids, hf[:, ids.shape[1] :])


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_generation_logprobs_equal_fresh_forward(arch: str) -> None:
    model = MODELS[arch]()
    g = torch.Generator().manual_seed(3)
    r = gen(model, make_prompts(), temperature=0.7, top_k=30, top_p=0.95, generator=g)
    assert_well_formed(r)
    fresh = response_logprobs(model, r, temperature=0.7)
    torch.testing.assert_close(fresh, r.logprobs, atol=1e-4, rtol=0)

    stats = response_logprobs(model, r, 0.7, return_entropy=True, return_logits=True)
    assert isinstance(stats, ResponseStats)
    torch.testing.assert_close(stats.logprobs, fresh)
    mask = r.response_mask.bool()  # (B, T)
    assert torch.all(stats.entropy[mask] > 0) and torch.all(stats.entropy[~mask] == 0)
    assert stats.logits.shape == (*r.response_ids.shape, VOCAB)
    assert response_logprobs(model, r, 0.7, return_entropy=True).logits is None


def test_response_logprobs_trains() -> None:
    """Rollout tensors are normal tensors: a gradient step through them works."""
    model = make_llama()
    r = gen(model, make_prompts(), generator=torch.Generator().manual_seed(0))
    model.train()
    logp = response_logprobs(model, r)  # (B, T)
    assert logp.requires_grad
    (-(logp * r.response_mask).sum()).backward()
    assert model.lm_head.weight.grad is not None
    assert model.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------
# Padding-free passes
# ----------------------------------------------------------------------------------------------


def test_pack_lays_each_sequence_out_once_and_points_at_its_response() -> None:
    r = gen(make_llama(), make_prompts(), generator=torch.Generator().manual_seed(0))
    packed = pack(r)
    flat_ids, flat_pos = packed.input_ids.flatten(), packed.position_ids.flatten()
    mask = r.response_mask.bool()  # (B, T)
    real = int(r.attention_mask.sum())
    assert int((flat_pos > 0).sum()) == real - len(r)  # every real token once (position 0 starts each)
    # The state at `predicts` is followed by the response token it predicts, at the next position.
    assert torch.equal(flat_ids[packed.predicts + 1][mask], r.response_ids[mask])
    assert torch.equal(
        flat_pos[packed.predicts][mask], (r.prompt_lengths()[:, None] - 1 + torch.arange(12))[mask]
    )


@pytest.mark.parametrize("arch", ["llama", "gpt2", "neox"])
def test_packed_pass_equals_the_padded_batch(arch: str, monkeypatch) -> None:
    model = MODELS[arch]()
    r = gen(model, make_prompts(), temperature=0.8, generator=torch.Generator().manual_seed(1))
    packed = response_logprobs(model, r, 0.8, return_entropy=True, return_hidden=True)
    monkeypatch.setattr("rlhf_lab.rollout.passes._packing_works", lambda run, model: False)
    padded = response_logprobs(model, r, 0.8, return_entropy=True, return_hidden=True)
    mask = r.response_mask.bool()
    torch.testing.assert_close(packed.logprobs, padded.logprobs, atol=1e-5, rtol=0)
    torch.testing.assert_close(packed.entropy, padded.entropy, atol=1e-5, rtol=0)
    torch.testing.assert_close(packed.hidden[mask], padded.hidden[mask], atol=1e-5, rtol=0)


class IgnoresPositions(torch.nn.Module):
    """A causal LM that drops position ids: it cannot tell packed sequences apart."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = make_llama()

    def forward(self, input_ids, position_ids=None, **kwargs):
        return self.inner(input_ids=input_ids, **kwargs)


def test_a_model_that_cannot_pack_gets_the_padded_batch() -> None:
    model = IgnoresPositions()
    r = gen(model.inner, make_prompts(), generator=torch.Generator().manual_seed(0))
    calls = []

    def run(input_ids, position_ids, attention_mask, keep):
        calls.append(attention_mask is not None)
        return (model(input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask).logits,)

    (logits,) = response_states(run, r, model)
    assert calls == [False, False, True]  # the probe's two calls, then one padded batch
    assert logits.shape == (*r.response_ids.shape, VOCAB)


# ----------------------------------------------------------------------------------------------
# EOS
# ----------------------------------------------------------------------------------------------


class ForceEosAtStep:
    """lm_head forward hook: at each model call, the first row still generating gets a huge EOS
    logit (finished rows leave the batch, so at call n that is the prompt's row n); counts calls."""

    def __init__(self, eos: int) -> None:
        self.eos, self.calls, self.batch_sizes = eos, 0, []

    def __call__(self, module, inputs, output: torch.Tensor) -> torch.Tensor:
        output = output.clone()
        output[0, -1, self.eos] += 1e4
        self.calls += 1
        self.batch_sizes.append(output.shape[0])
        return output


@pytest.mark.parametrize("pad", [PAD, EOS], ids=["pad!=eos", "pad==eos"])
def test_eos_ends_each_row_and_stops_loop(pad: int) -> None:
    model = make_llama()
    prompts = make_prompts()
    batch = len(prompts)
    hook = ForceEosAtStep(EOS)
    handle = model.lm_head.register_forward_hook(hook)
    ids, mask = left_pad(prompts, pad)
    r = generate(
        model,
        ids,
        mask,
        max_new_tokens=batch + 5,
        eos_token_id=EOS,
        pad_token_id=pad,
        generator=torch.Generator().manual_seed(0),
    )
    handle.remove()
    assert hook.calls == batch  # prefill + (batch - 1) decode steps: stopped early
    assert hook.batch_sizes == list(range(batch, 0, -1))  # each ended row left the batch
    assert r.response_ids.shape == (batch, batch)
    expected_mask = (torch.arange(batch)[None, :] <= torch.arange(batch)[:, None]).long()
    assert torch.equal(r.response_mask, expected_mask)  # row i: i tokens, then EOS at i
    assert torch.equal(r.response_ids.diagonal(), torch.full((batch,), EOS))
    assert torch.all(r.response_ids[expected_mask == 0] == pad)
    assert torch.all(r.logprobs[expected_mask == 0] == 0)
    assert torch.allclose(r.logprobs.diagonal(), torch.zeros(batch), atol=1e-3)  # p(EOS) ~ 1
    assert r.ends_with_eos.all()
    assert r.lengths().tolist() == list(range(1, batch + 1))


def test_truncated_rows_do_not_end_with_eos() -> None:
    model = make_llama()
    handle = model.lm_head.register_forward_hook(ForceEosAtStep(EOS))
    r = gen(model, make_prompts(), max_new_tokens=3, do_sample=False)
    handle.remove()
    assert r.response_ids.shape[1] == 3
    assert r.ends_with_eos.tolist() == [True, True, True, False, False, False]
    assert r.lengths().tolist() == [1, 2, 3, 3, 3, 3]
    assert_well_formed(r)


# ----------------------------------------------------------------------------------------------
# sampling
# ----------------------------------------------------------------------------------------------


def test_sampling_is_reproducible_with_generator() -> None:
    model = make_llama()
    prompts = make_prompts()
    a = gen(model, prompts, generator=torch.Generator().manual_seed(7))
    b = gen(model, prompts, generator=torch.Generator().manual_seed(7))
    c = gen(model, prompts, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a.response_ids, b.response_ids) and torch.equal(a.logprobs, b.logprobs)
    assert not torch.equal(a.response_ids, c.response_ids)


@pytest.mark.parametrize(
    "sampling",
    [{"top_k": 1}, {"top_p": 1e-6}, {"temperature": 0.0}, {"do_sample": False, "temperature": 5}],
    ids=["top_k=1", "top_p~0", "T=0", "do_sample=False"],
)
def test_degenerate_sampling_equals_greedy(sampling: dict) -> None:
    model = make_llama()
    prompts = make_prompts()
    greedy = gen(model, prompts, do_sample=False)
    r = gen(model, prompts, generator=torch.Generator().manual_seed(0), **sampling)
    assert torch.equal(r.response_ids, greedy.response_ids)
    torch.testing.assert_close(r.logprobs, greedy.logprobs)  # temperature 1 or greedy


def test_sampler_follows_distribution_and_filters() -> None:
    g = torch.Generator().manual_seed(0)
    probs = torch.tensor([0.1, 0.0, 0.6, 0.3]).expand(40_000, 4)  # (N, 4)
    freq = torch.bincount(_sample(probs, g), minlength=4).float() / 40_000
    torch.testing.assert_close(freq, probs[0], atol=0.01, rtol=0)
    assert freq[1] == 0

    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0, 0.0]]).expand(4000, 5)  # (N, 5)
    kw = {"greedy": False, "temperature": 1.0, "generator": g}
    tok, logp = _select(logits, top_k=2, top_p=1.0, **kw)
    assert set(tok.tolist()) == {0, 1}
    torch.testing.assert_close(logp, logits.log_softmax(-1).gather(1, tok[:, None]).squeeze(1))
    tok, _ = _select(logits, top_k=0, top_p=0.8, **kw)  # p = .57, .21, .13, ...: nucleus {0,1,2}
    assert set(tok.tolist()) == {0, 1, 2}


# ----------------------------------------------------------------------------------------------
# modes, grads, peft, text
# ----------------------------------------------------------------------------------------------


def test_mode_restored_and_no_grad_recorded() -> None:
    model = make_llama()
    model.train()
    model.model.layers[1].eval()  # a deliberately frozen-in-eval submodule stays so
    seen: list[bool] = []
    model.register_forward_pre_hook(lambda m, args: seen.append(m.training))
    r = gen(model, make_prompts(), generator=torch.Generator().manual_seed(0))
    assert seen and not any(seen)  # eval during generation
    assert model.training and model.model.layers[0].training
    assert not model.model.layers[1].training
    assert not r.logprobs.requires_grad and r.logprobs.grad_fn is None
    assert all(p.grad is None for p in model.parameters())
    assert not r.logprobs.is_inference() and not r.response_ids.is_inference()


def test_peft_lora_model() -> None:
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(
        make_llama(), peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    )
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # make the adapter non-trivial
            torch.nn.init.normal_(p, std=0.5)
    prompts = make_prompts()
    batch = gen(model, prompts, do_sample=False)
    base = gen(make_llama(), prompts, do_sample=False)
    assert not torch.equal(batch.logprobs, base.logprobs)  # the adapter is in the path
    for i, prompt in enumerate(prompts):
        alone = gen(model, [prompt], do_sample=False)
        width = alone.response_ids.shape[1]
        assert torch.equal(batch.response_ids[i, :width], alone.response_ids[0])
        torch.testing.assert_close(batch.logprobs[i, :width], alone.logprobs[0], atol=1e-4, rtol=0)
    r = gen(model, prompts, temperature=0.7, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(response_logprobs(model, r, 0.7), r.logprobs, atol=1e-4, rtol=0)


class CharTokenizer:
    """Minimal tokenizer: BOS=2 prepended, chars map to ids 3.., EOS=1, PAD=0."""

    pad_token_id, eos_token_id, bos_token_id = PAD, EOS, 2

    def __call__(self, text: str) -> dict[str, list[int]]:
        return {"input_ids": [self.bos_token_id] + [3 + (ord(c) % (VOCAB - 3)) for c in text]}

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        special = {PAD, EOS, 2} if skip_special_tokens else set()
        return "".join(chr(ord("a") + (i - 3) % 26) if i >= 3 else f"<{i}>" for i in ids if i not in special)


def test_generate_text_batches_and_decodes() -> None:
    model = make_llama()
    tok = CharTokenizer()
    prompts = ["hello", "a", "the quick fox", "xy", "longer prompt here"]
    texts = generate_text(model, tok, prompts, batch_size=2, max_new_tokens=6, do_sample=False)
    assert len(texts) == len(prompts)
    for prompt, text in zip(prompts, texts, strict=True):
        ids, mask = left_pad([tok(prompt)["input_ids"]], PAD)
        alone = generate(
            model, ids, mask, max_new_tokens=6, eos_token_id=EOS, pad_token_id=PAD, do_sample=False
        )
        n = int(alone.lengths()[0])
        assert text == tok.decode(alone.response_ids[0, :n].tolist(), skip_special_tokens=True)
        assert "<" not in text


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu() -> None:
    model = make_llama()
    prompts = make_prompts()
    cpu = gen(model, prompts, do_sample=False)
    cuda = gen(model.cuda(), prompts, do_sample=False)  # CPU prompts are moved to the model
    assert cuda.response_ids.is_cuda
    assert torch.equal(cuda.response_ids.cpu(), cpu.response_ids)
    torch.testing.assert_close(cuda.logprobs.cpu(), cpu.logprobs, atol=1e-3, rtol=0)
    g = torch.Generator(device="cuda").manual_seed(0)
    r = gen(model, prompts, temperature=0.7, top_p=0.9, generator=g)
    torch.testing.assert_close(response_logprobs(model, r, 0.7), r.logprobs, atol=1e-3, rtol=0)
