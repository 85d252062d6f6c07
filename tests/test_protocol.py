"""The comparison protocol (rlhf_lab/protocol/): the protocol file's checks, interpolation at a budget by
hand, the tables recomputed from the CSVs, and a tiny protocol run end to end and rerun from the cache
(slow)."""

from __future__ import annotations

import re
import statistics

import pytest
import yaml

from rlhf_lab.protocol import analysis, curves, load, report
from rlhf_lab.protocol.spec import ProtocolError
from rlhf_lab.report import stats
from tests.helpers import DEBUG

VALID = {
    "question": "a against b",
    "base": ["stage=rl"],
    "arms": {
        "a": {"overrides": ["algo=rloo"], "tune": {"rl.lr": ["1e-3", "3e-3"], "algo.kl.beta": [0.05, 0.1]}},
        "b": {"overrides": ["algo=reinforce"]},
    },
    "seeds": {"key": "rl.seed", "tuning": [100], "evaluation": [0, 1, 2, 3, 4]},
    "selection": "max_mean_at_budget",
    "metric": "gold",
    "budget": {"axis": "samples", "value": 12},
    "matched_kl": 0.5,
    "comparisons": {"primary": ["a", "b"]},
}


def write_protocol(folder, **changes):
    path = folder / "protocol.yaml"
    path.write_text(yaml.safe_dump({**VALID, **changes}, sort_keys=False))
    return path


# ------------------------------------------------------------------------------ the protocol file
def test_a_protocol_reads_as_declared(tmp_path):
    protocol = load(write_protocol(tmp_path))
    assert protocol.name == tmp_path.name and protocol.base == ("stage=rl",)
    assert protocol.arms["a"].settings() == [
        ("rl.lr=1e-3", "algo.kl.beta=0.05"),
        ("rl.lr=1e-3", "algo.kl.beta=0.1"),
        ("rl.lr=3e-3", "algo.kl.beta=0.05"),
        ("rl.lr=3e-3", "algo.kl.beta=0.1"),
    ]
    assert protocol.arms["b"].settings() == [()]
    assert [str(v) for v in protocol.views] == ["samples=12", "kl=0.5"]
    assert protocol.pairs == [("a", "b")] and protocol.test == "t"


@pytest.mark.parametrize(
    "changes, key",
    [
        (
            {"seeds": {"tuning": [3, 100], "evaluation": [0, 1, 2, 3, 4]}},
            "seeds.tuning: [3] are also evaluation",
        ),
        ({"seeds": {"tuning": [100], "evaluation": [0, 1, 2, 3]}}, "seeds.evaluation: 4 seeds; at least 5"),
        (
            {"seeds": {"tuning": [100], "evaluation": [0, 1, 2, 3, 3, 4]}},
            "seeds.evaluation: a seed is listed twice",
        ),
        ({"seeds": {"tuning": [], "evaluation": [0, 1, 2, 3, 4]}}, "seeds.tuning: 0 seeds"),
        ({"budget": {"axis": "epochs", "value": 12}}, "budget.axis: 'epochs' is not a budget axis"),
        ({"budget": {"axis": "samples", "value": -1}}, "budget.value"),
        ({"also_at": [{"axis": "steps", "value": 3}]}, "also_at[0].axis"),
        ({"selection": "best"}, "selection: 'best' is not a rule"),
        ({"test": "z"}, "test: 'z' is not a test"),
        ({"matched_kl": 0}, "matched_kl"),
        ({"peak": "yes"}, "peak: 'yes' must be true"),
        ({"comparisons": {"primary": ["a", "c"]}}, "comparisons.primary: 'c' is not an arm"),
        ({"comparisons": {"primary": ["a", "b"], "secondary": [["b", "a"]]}}, "compared twice"),
        ({"arms": {"a": {"overrides": ["algo=rloo"]}}}, "arms: a mapping of at least two arms"),
        (
            {"arms": {**VALID["arms"], "c": {"overrides": ["rl.lr=1"], "tune": {"rl.lr": [1, 2]}}}},
            "arms.c.tune.rl.lr",
        ),
        ({"arms": {**VALID["arms"], "c": {"tunes": {}}}}, "arms.c.tunes: unknown key"),
        ({"arm": {}}, "arm: unknown key"),
    ],
)
def test_a_bad_protocol_names_the_key(tmp_path, changes, key):
    with pytest.raises(ProtocolError, match=re.escape(key)):
        load(write_protocol(tmp_path, **changes))


def test_every_problem_is_reported_at_once(tmp_path):
    bad = {"seeds": {"tuning": [0], "evaluation": [0, 1]}, "budget": {"axis": "epochs", "value": 1}}
    with pytest.raises(ProtocolError) as error:
        load(write_protocol(tmp_path, **bad))
    for key in ("seeds.tuning", "seeds.evaluation", "budget.axis"):
        assert key in str(error.value)


def test_the_runs_carry_base_arm_setting_tuning_and_seed_overrides_in_that_order(tmp_path):
    from rlhf_lab.protocol import runner

    protocol = load(write_protocol(tmp_path, tuning_overrides=["rl.max_steps=4"]))
    tuning = runner.tuning_runs(protocol)
    assert len(tuning) == 4 and {r.arm for r in tuning} == {"a"}  # b tunes nothing: no tuning run
    assert tuning[1].overrides == (
        "stage=rl", "algo=rloo", "rl.lr=1e-3", "algo.kl.beta=0.1", "rl.max_steps=4", "rl.seed=100"
    )  # fmt: skip
    evaluation = runner.evaluation_runs(protocol, {"a": tuning[1].setting, "b": "default"})
    assert [(r.arm, r.seed) for r in evaluation] == [(arm, s) for arm in "ab" for s in range(5)]
    assert evaluation[0].overrides == ("stage=rl", "algo=rloo", "rl.lr=1e-3", "algo.kl.beta=0.1", "rl.seed=0")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"base": ["stage=rl", "rl.lrr=1"]}, "arms.a (rl.lr=1e-3 algo.kl.beta=0.05, tuning)"),
        ({"base": ["stage=sft"]}, "arms.a: stage=sft"),
        ({"base": ["stage=rl", "rl.seed=3"]}, "arms.a: its overrides set rl.seed"),
    ],
)
def test_every_run_is_composed_before_any_runs(tmp_path, changes, message):
    from rlhf_lab.protocol import runner

    with pytest.raises(ProtocolError, match=re.escape(message)):
        runner.check(load(write_protocol(tmp_path, **changes)))


def test_arms_may_run_different_stages_each_with_its_own_seed(tmp_path):
    from rlhf_lab.protocol import runner

    arms = {"dpo": {"overrides": ["stage=dpo"]}, "ppo": {"overrides": ["stage=rl", "algo=ppo"]}}
    seeds = {"tuning": [100], "evaluation": [0, 1, 2, 3, 4]}  # no key: each run's <stage>.seed
    protocol = load(
        write_protocol(tmp_path, base=[], arms=arms, seeds=seeds, comparisons={"primary": ["dpo", "ppo"]})
    )
    runner.check(protocol)  # composes: a DPO arm beside an RL arm
    chosen = {"dpo": "default", "ppo": "default"}
    assert {r.arm: r.overrides[-1] for r in runner.evaluation_runs(protocol, chosen) if r.seed == 0} == {
        "dpo": "dpo.seed=0",
        "ppo": "rl.seed=0",
    }


# ------------------------------------------------------------------------------ interpolation
def test_interpolation_at_a_budget_by_hand():
    samples, gold = [0, 8, 16, 24], [0.0, 0.4, 1.0, 0.7]
    assert curves.interpolate(samples, gold, 12) == pytest.approx(0.4 + (1.0 - 0.4) * 4 / 8)  # 0.7
    assert curves.interpolate(samples, gold, 16) == 1.0  # at an evaluation: its value
    assert curves.interpolate(samples, gold, 20) == pytest.approx(0.85)
    assert curves.interpolate(samples, gold, 25) is None  # never extrapolated


def test_at_a_kl_the_first_crossing_counts():
    kl, gold = [0.0, 2.0, 1.0, 3.0], [0.0, 1.0, 5.0, 2.0]
    assert curves.interpolate(kl, gold, 1.5) == pytest.approx(0.75)  # between 0 and 2, not at the later 1.0
    assert curves.interpolate(kl, gold, 2.5) == pytest.approx(5.0 + (2.0 - 5.0) * (2.5 - 1.0) / (3.0 - 1.0))


def test_curve_csvs_read_back_to_the_same_values(tmp_path):
    rows = [
        {
            "phase": "tuning",
            "arm": "a",
            "setting": "rl.lr=1e-3",
            "seed": 3,
            "step": 0,
            "samples": 0,
            "gold": 0.1,
        },
        {
            "phase": "tuning",
            "arm": "a",
            "setting": "rl.lr=1e-3",
            "seed": 3,
            "step": 1,
            "samples": 8,
            "gold": 1 / 3,
        },
        {
            "phase": "tuning",
            "arm": "a",
            "setting": "default",
            "seed": 3,
            "step": 1,
            "samples": 8,
            "gold": None,
        },
    ]
    curves.write_csv(tmp_path / "c.csv", rows, curves.IDENTITY)
    assert (tmp_path / "c.csv").read_text().splitlines()[0] == "phase,arm,setting,seed,step,samples,gold"
    assert curves.read_csv(tmp_path / "c.csv") == rows


# ------------------------------------------------------------------------------ tables from curves
def run_rows(phase, arm, setting, seed, gold, kl):
    """A run evaluated at steps 0, 1, 2 of 8 samples each."""
    identity = {"phase": phase, "arm": arm, "setting": setting, "seed": seed}
    return [
        identity
        | {"step": s, "samples": 8 * s, "tokens": 50 * s, "updates": s, "flops": 1000 * s}
        | {"wall_time": 1.5 * s, "gold": g, "kl": k}
        for s, g, k in zip(range(3), gold, kl, strict=True)
    ]


def synthetic(protocol):
    """Tuning: a's second setting wins at samples=12; evaluation: a above b by a known amount per seed."""
    rows = []
    for i, setting in enumerate(analysis.setting_label(s) for s in protocol.arms["a"].settings()):
        rows += run_rows("tuning", "a", setting, 100, [0.0, 0.1 * (i == 1), 0.2], [0.0, 0.4, 1.0])
    for seed in protocol.evaluation_seeds:
        rows += run_rows(
            "evaluation", "a", "rl.lr=1e-3 algo.kl.beta=0.1", seed, [0, 0.3 + seed / 10, 0.5], [0, 0.6, 1]
        )
        rows += run_rows("evaluation", "b", "default", seed, [0, 0.1, 0.2 + seed / 20], [0, 0.2, 0.4])
    return rows


def test_the_rule_chooses_the_best_mean_and_the_first_of_a_tie(tmp_path):
    protocol = load(write_protocol(tmp_path))
    tuning = analysis.tuning_table(protocol, analysis.finals(protocol, synthetic(protocol)))
    assert [r["score"] for r in tuning] == pytest.approx([0.1, 0.15, 0.1, 0.1])  # gold at samples=12
    assert analysis.choose(protocol, tuning) == {"a": "rl.lr=1e-3 algo.kl.beta=0.1", "b": "default"}
    tied = [r | {"score": 0.2} for r in tuning]
    assert analysis.choose(protocol, tied)["a"] == "rl.lr=1e-3 algo.kl.beta=0.05"
    with pytest.raises(ProtocolError, match="arm a: no tuning run has a score"):
        analysis.choose(protocol, [r | {"score": None} for r in tuning])


def test_the_comparison_is_the_paired_difference_at_the_budget_and_at_the_kl(tmp_path):
    protocol = load(write_protocol(tmp_path))
    table = analysis.comparison_table(protocol, analysis.finals(protocol, synthetic(protocol)))
    seeds = protocol.evaluation_seeds
    a = [(0.3 + s / 10 + 0.5) / 2 for s in seeds]  # samples 12: halfway between steps 1 and 2
    b = [(0.1 + 0.2 + s / 20) / 2 for s in seeds]
    a_kl = [(0.3 + s / 10) * 0.5 / 0.6 for s in seeds]  # KL 0.5: between 0 (step 0) and 0.6 (step 1)
    at_budget, at_kl = table
    expected = stats.compare({"a − b at samples=12": (a, b)})[0]  # the one comparison made: Holm over 1
    assert at_budget["mean"] == pytest.approx(expected.difference.mean)
    assert at_budget["half"] == pytest.approx(expected.difference.half)
    assert at_budget["p_holm"] == pytest.approx(expected.p) and at_budget["verdict"] == expected.verdict
    assert at_budget["iqm"] == pytest.approx(stats.iqm([x - y for x, y in zip(a, b, strict=True)]))
    assert at_budget["up"] == 5 and at_budget["role"] == "primary"
    assert at_kl["n"] == 0 and at_kl["verdict"].startswith("not compared")  # b's KL never reaches 0.5
    arms = {
        (r["view"], r["arm"]): r
        for r in analysis.arm_table(protocol, analysis.finals(protocol, synthetic(protocol)))
    }
    assert arms[("kl=0.5", "a")]["mean"] == pytest.approx(statistics.fmean(a_kl))
    assert arms[("kl=0.5", "b")]["n"] == 0


def test_at_the_peak_each_run_gives_its_best_evaluation(tmp_path):
    protocol = load(write_protocol(tmp_path, peak=True))
    assert [str(v) for v in protocol.views] == ["samples=12", "kl=0.5", "peak"]
    curve = [{"gold": 0.2}, {"gold": 0.9}, {"gold": None}, {"gold": -0.4}]  # rises, falls
    assert curves.value_at(curve, "peak", 0.0, "gold") == 0.9
    assert curves.value_at([{"gold": None}], "peak", 0.0, "gold") is None
    table = analysis.comparison_table(protocol, analysis.finals(protocol, synthetic(protocol)))
    at_peak = next(r for r in table if r["view"] == "peak")
    a = [0.5 if s < 2 else 0.3 + s / 10 for s in protocol.evaluation_seeds]  # the larger of 0.3 + s/10, 0.5
    b = [0.2 + s / 20 for s in protocol.evaluation_seeds]
    assert at_peak["mean"] == pytest.approx(statistics.fmean(x - y for x, y in zip(a, b, strict=True)))
    assert load(write_protocol(tmp_path)).views[-1].axis == "kl"  # off by default


def test_with_a_proxy_the_report_gives_each_arms_overoptimization_signature(tmp_path):
    protocol = load(write_protocol(tmp_path))
    rows = synthetic(protocol)
    assert analysis.signatures(rows) == []  # no proxy in the curves: no signature
    rows = [r | {"reward": r["step"] * 1.0} for r in rows]  # the proxy climbs 0, 1, 2
    for r in rows:  # b's gold rises, then falls back to 0 at its end
        if r["arm"] == "b" and r["step"] == 2:
            r["gold"] = 0.0
    signatures = analysis.signatures(rows)
    assert len(signatures) == 10 and {s["phase"] for s in signatures} == {"evaluation"}
    b = [s for s in signatures if s["arm"] == "b"]
    assert [s["peak_step"] for s in b] == [1] * 5 and [s["gold_drop_to_end"] for s in b] == [0.1] * 5
    assert [s["proxy_rise"] for s in b] == [1.0] * 5  # from the peak (step 1) to the end (step 2)
    table = {r["arm"]: r for r in analysis.signature_table(protocol, signatures)}
    assert table["b"]["peak_gold"] == pytest.approx(0.1) and table["b"]["peak_gold_half"] == pytest.approx(0)
    assert table["a"]["end_gold"] == pytest.approx(0.5)
    markdown = report.write(protocol, rows, tmp_path)
    assert "## The overoptimization signature" in markdown and (tmp_path / "signatures.csv").is_file()
    assert markdown.index("overoptimization signature") < markdown.index("Raw data")


def test_the_report_is_recomputed_from_the_curves_alone(tmp_path):
    protocol = load(write_protocol(tmp_path))
    markdown = report.write(protocol, synthetic(protocol), tmp_path)
    written = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.suffix in (".csv", ".yaml", ".md")}
    for name in ("finals.csv", "tuning.csv", "arms.csv", "comparisons.csv", "chosen.yaml", "report.md"):
        (tmp_path / name).unlink()
    assert report.write_from_curves(protocol, tmp_path) == markdown
    assert {
        p.name: p.read_bytes() for p in tmp_path.iterdir() if p.suffix in (".csv", ".yaml", ".md")
    } == written
    verdict = analysis.comparison_table(protocol, analysis.finals(protocol, synthetic(protocol)))[0][
        "verdict"
    ]
    assert "| samples=12 | **a − b** (primary) | 5 |" in markdown and f"| {verdict} |" in markdown
    assert yaml.safe_load((tmp_path / "chosen.yaml").read_text())["a"]["overrides"] == [
        "algo=rloo", "rl.lr=1e-3", "algo.kl.beta=0.1"
    ]  # fmt: skip


# ------------------------------------------------------------------------------ end to end (slow)
TINY = {
    "question": "RLOO against REINFORCE, two RL steps on the debug world",
    "base": [
        DEBUG,
        *["stage=rl", "objective=length", "gold=vader", "rl.max_steps=2", "rl.rollouts_per_step=8"],
        *["rl.sampling.max_new_tokens=6", "rl.eval_prompts=4", "rl.eval_every=2", "rl.warmup_steps=0"],
        *["rl.checkpoint_every=100", "rl.samples_every=100"],
    ],
    "arms": {
        "rloo": {"overrides": ["algo=rloo"], "tune": {"rl.lr": ["1e-3", "3e-3"]}},
        "reinforce": {"overrides": ["algo=reinforce", "rl.lr=1e-3"]},  # not tuned: one setting
    },
    "seeds": {"tuning": [100], "evaluation": [0, 1, 2, 3, 4]},
    "metric": "gold",
    "budget": {"axis": "samples", "value": 12},
    "matched_kl": 0.3,
    "comparisons": {"primary": ["rloo", "reinforce"]},
}
WRITTEN = (
    "curves.csv",
    "finals.csv",
    "tuning.csv",
    "arms.csv",
    "comparisons.csv",
    "chosen.yaml",
    "report.md",
)


def sft_params() -> int:
    """N of the SFT policy every run of TINY starts from."""
    from rlhf_lab import api
    from rlhf_lab.budget import matmul_params
    from rlhf_lab.models import folder_settings, load_causal_lm, load_tokenizer
    from rlhf_lab.pipeline import artifact_dir

    cfg = api.compose(*TINY["base"], "algo=rloo")
    sft, settings = artifact_dir(cfg, "sft"), folder_settings(cfg.model)
    return matmul_params(load_causal_lm(sft, settings, load_tokenizer(sft, settings)))


@pytest.mark.slow
def test_a_tiny_protocol_runs_end_to_end_and_a_rerun_from_the_cache_changes_no_number(tmp_path, capsys):
    from rlhf_lab.protocol import main, run

    path = tmp_path / "protocol.yaml"
    path.write_text(yaml.safe_dump(TINY, sort_keys=False))
    markdown = run(path)
    assert all((tmp_path / name).is_file() for name in (*WRITTEN, "curves.png"))
    tuning = curves.read_csv(tmp_path / "tuning.csv")
    assert [(r["arm"], r["setting"], r["seed"]) for r in tuning] == [
        ("rloo", "rl.lr=1e-3", 100),
        ("rloo", "rl.lr=3e-3", 100),
    ]
    chosen = yaml.safe_load((tmp_path / "chosen.yaml").read_text())
    scores = analysis.setting_scores(tuning)["rloo"]
    assert (
        chosen["rloo"]["setting"] == max(scores, key=scores.get)
        and chosen["reinforce"]["setting"] == "default"
    )

    rows = curves.read_csv(tmp_path / "curves.csv")
    runs = analysis.by_run(rows)
    assert len(runs) == 2 + 2 * 5 and all([r["step"] for r in c] == [0, 2] for c in runs.values())
    assert {(k[1], k[2]) for k in runs if k[0] == "evaluation"} == {
        (a, c["setting"]) for a, c in chosen.items()
    }
    n = sft_params()
    for (
        curve
    ) in runs.values():  # RLOO and REINFORCE: 2N (generation) + 2N (reference) + 6N (update) per token
        assert [r["samples"] for r in curve] == [0, 16] and [r["updates"] for r in curve] == [0, 2]
        assert 0 < curve[1]["tokens"] <= 6 * 16 and curve[1]["wall_time"] > 0
        assert curve[1]["flops"] % (10 * n) == 0 and curve[1]["flops"] // (10 * n) > curve[1]["tokens"]
    for final in curves.read_csv(tmp_path / "finals.csv"):  # samples 12: between steps 0 (0) and 2 (16)
        g0, g2 = (r["gold"] for r in runs[tuple(final[k] for k in curves.IDENTITY)])
        assert final["gold@samples=12"] == g0 + (g2 - g0) * (12 - 0) / (16 - 0)
    assert "| samples=12 | **rloo − reinforce** (primary) | 5 |" in markdown

    written = {name: (tmp_path / name).read_bytes() for name in WRITTEN}
    capsys.readouterr()
    main([str(path)])  # the same command again: every run from the cache
    assert capsys.readouterr().err.count(": reused") == 12
    assert {name: (tmp_path / name).read_bytes() for name in WRITTEN} == written
