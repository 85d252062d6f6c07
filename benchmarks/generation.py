"""Generation throughput: rlhf_lab.rollout.generate against Hugging Face `model.generate` (the peer
that TRL's trainers call), on the same model, prompts and sampling settings, in the same process.

    python benchmarks/generation.py                      # the tiny world's initial model shape, CPU
    python benchmarks/generation.py --model gpt2 --device cuda

Prints the median seconds per batch, completion tokens per second and peak memory (CUDA) for both,
and their ratio. Both produce sampled tokens; rlhf_lab also returns every token's log-prob.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from rlhf_lab.rollout import generate


def tiny_llama(vocab: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=vocab,
            hidden_size=192,
            intermediate_size=512,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            tie_word_embeddings=True,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
        )
    )


def prompts(batch: int, vocab: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded random prompts of 4..16 tokens (ids avoid pad/BOS/EOS)."""
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(4, 17, (batch,), generator=gen)
    ids = torch.zeros(batch, int(lengths.max()), dtype=torch.long)  # (B, P)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths.tolist()):
        ids[i, -n:] = torch.randint(3, vocab, (n,), generator=gen)
        mask[i, -n:] = 1
    return ids.to(device), mask.to(device)


def timed(fn, repeats: int, device) -> tuple[float, int, float]:
    """(median seconds, completion tokens of the last call, peak MiB on CUDA)."""
    times, tokens = [], 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(repeats + 1):  # the first call warms up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        tokens = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else float("nan")
    return statistics.median(times[1:]), tokens, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="HF model name or folder (default: a tiny Llama)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    model = (
        (AutoModelForCausalLM.from_pretrained(args.model) if args.model else tiny_llama(2048))
        .to(device)
        .eval()
    )
    vocab = model.config.vocab_size
    ids, mask = prompts(args.batch, vocab, device)
    eos, pad = vocab - 1, 0  # an EOS the random model rarely samples: full-length completions for both

    def ours() -> int:
        return int(
            generate(
                model,
                ids,
                mask,
                max_new_tokens=args.new_tokens,
                eos_token_id=eos,
                pad_token_id=pad,
                temperature=1.0,
            ).response_mask.sum()
        )

    def peer() -> int:
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=args.new_tokens,
            do_sample=True,
            temperature=1.0,
            top_k=0,
            eos_token_id=eos,
            pad_token_id=pad,
        )
        return int((out[:, ids.shape[1] :] != pad).sum())

    with torch.inference_mode():
        rows = {
            "rlhf_lab.rollout.generate": timed(ours, args.repeats, device),
            "transformers generate": timed(peer, args.repeats, device),
        }
    print(f"batch {args.batch}, {args.new_tokens} new tokens, sampling T=1, device {device}")
    for name, (sec, tokens, peak) in rows.items():
        print(f"{name:28s} {sec:7.3f} s/batch  {tokens / sec:9.0f} completion tok/s  peak {peak:8.1f} MiB")
    (ours_s, ours_t, _), (peer_s, peer_t, _) = rows.values()
    print(f"throughput ratio rlhf_lab / transformers: {(ours_t / ours_s) / (peer_t / peer_s):.2f}x")


if __name__ == "__main__":
    main()
