"""Tiny-world corpus generation speed: seconds for N documents (the test suite's corpus is 40,000).

    python benchmarks/corpus.py                  # 40,000 documents, median of 3 rounds
    python benchmarks/corpus.py --documents 200000 --rounds 1

The test suite checks what the corpus is, not how fast it is made; this prints the time.
"""

from __future__ import annotations

import argparse
import statistics
import time

from rlhf_lab.world.corpus import generate_documents


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=40_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    times = []
    for seed in range(args.rounds):
        start = time.perf_counter()
        generate_documents(args.documents, seed=seed)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    rate = args.documents / median
    print(f"{args.documents} documents: {median:.2f} s (median of {args.rounds}), {rate:,.0f} per second")


if __name__ == "__main__":
    main()
