"""Stage `bon`: best-of-n, the unbiased expectation over subsets of the samples, and its curves with
the gold scorer and with the reward model."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

from rlhf_lab.artifacts import read_manifest
from rlhf_lab.pipeline import ensure
from rlhf_lab.stages.bon import best_of_n_expectation
from tests.helpers import SMALL


def test_best_of_n_expectation_equals_the_mean_over_all_subsets():
    gen = torch.Generator().manual_seed(0)
    proxy, target = torch.randn(3, 6, generator=gen), torch.randn(3, 6, generator=gen)
    for n in (1, 2, 3, 6):
        brute = torch.stack(
            [
                torch.stack(
                    [
                        target[b, list(s)][proxy[b, list(s)].argmax()]
                        for s in itertools.combinations(range(6), n)
                    ]
                ).mean()
                for b in range(3)
            ]
        )
        torch.testing.assert_close(best_of_n_expectation(proxy, target, n), brute, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="n=7"):
        best_of_n_expectation(proxy, target, 7)


@pytest.mark.slow
def test_best_of_n_with_the_gold_scorer_rises_with_n(make_cfg, tmp_path):
    cfg = make_cfg(*SMALL, "stage=bon", "objective=gold")
    out = ensure(cfg, "bon", tmp_path)
    table = json.loads((out / "bon.json").read_text())
    gold = [r["gold"] for r in table]
    assert [r["n"] for r in table] == [1, 2, 4, 8]
    assert all(a <= b + 1e-9 for a, b in zip(gold, gold[1:], strict=False)) and gold[-1] > gold[0]
    assert [r["proxy"] for r in table] == pytest.approx(gold)
    assert [r["kl"] for r in table] == pytest.approx([math.log(n) - (n - 1) / n for n in (1, 2, 4, 8)])
    assert (out / "bon.png").stat().st_size > 10_000 and (out / "bon.csv").is_file()


@pytest.mark.slow
def test_best_of_n_with_the_reward_model_reports_proxy_and_gold(reward_run, tmp_path):
    cfg, rm_dir, _ = reward_run
    from dataclasses import replace

    bon_cfg = replace(cfg, stage="bon")
    out = ensure(bon_cfg, "bon", tmp_path)
    assert read_manifest(out)["inputs"]["reward"] == str(rm_dir)
    table = json.loads((out / "bon.json").read_text())
    proxy = [r["proxy"] for r in table]
    assert all(a <= b + 1e-9 for a, b in zip(proxy, proxy[1:], strict=False))  # best-of-n maximizes the proxy
    assert all("gold" in r for r in table)
