"""rlhf_lab.report.stats against hand-computed values: Student's t (closed forms for df 1 and 2, table
values for df 4), the paired t-test, exact paired tests, Holm, the IQM, the bootstrap and the verdict."""

from __future__ import annotations

import math

import pytest

from rlhf_lab.report import stats


# ------------------------------------------------------------------------------------ Student's t
@pytest.mark.parametrize("x", [0.0, 0.1, 0.37, 0.5, 0.8, 1.0])
def test_betainc_matches_its_closed_forms(x):
    assert stats.betainc(1, 1, x) == pytest.approx(x, abs=1e-15)
    assert stats.betainc(3, 1, x) == pytest.approx(x**3, abs=1e-15)  # I_x(a, 1) = x^a
    assert stats.betainc(1, 2.5, x) == pytest.approx(1 - (1 - x) ** 2.5, abs=1e-15)  # I_x(1, b)
    assert stats.betainc(2, 3.5, x) == pytest.approx(1 - stats.betainc(3.5, 2, 1 - x), abs=1e-15)


def test_t_quantiles_match_the_tables_and_the_closed_forms():
    assert round(stats.t_quantile(0.975, 1), 3) == 12.706
    assert round(stats.t_quantile(0.975, 4), 3) == 2.776
    assert round(stats.t_quantile(0.975, 9), 3) == 2.262
    assert round(stats.t_quantile(0.995, 2), 3) == 9.925
    for p in (0.6, 0.9, 0.975, 0.9995, 0.02):
        assert stats.t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-13)  # Cauchy
        two = (2 * p - 1) / math.sqrt(2 * p * (1 - p))  # df 2: t = (2p − 1)/√(2p(1 − p))
        assert stats.t_quantile(p, 2) == pytest.approx(two, rel=1e-13)
    assert stats.t_quantile(0.975, 10_000) == pytest.approx(1.959963984540054, abs=5e-4)  # → the normal's


@pytest.mark.parametrize("t", [0.0, 0.3, 1.0, 2.5, 12.706, 300.0])
def test_two_sided_p_values_match_the_closed_forms(t):
    assert stats.t_two_sided_p(t, 1) == pytest.approx(1 - 2 * math.atan(t) / math.pi, rel=1e-12)
    assert stats.t_two_sided_p(t, 2) == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-12)
    assert stats.t_two_sided_p(stats.t_quantile(0.975, 4), 4) == pytest.approx(0.05, rel=1e-12)


def test_t_agrees_with_scipy_where_it_is_installed():
    scipy_stats = pytest.importorskip("scipy.stats")
    for df in (1, 3, 4, 7, 30, 2.5):
        for p in (0.55, 0.9, 0.975, 0.999):
            assert stats.t_quantile(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), rel=1e-11)
        assert stats.t_two_sided_p(2.1, df) == pytest.approx(2 * scipy_stats.t.sf(2.1, df), rel=1e-11)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        stats.t_quantile(1.0, 4)
    with pytest.raises(ValueError):
        stats.betainc(0, 1, 0.5)
    with pytest.raises(ValueError, match="at least 2"):
        stats.mean_difference([1.0])


# ---------------------------------------------------------------------------------- paired tests
def test_paired_difference_by_hand():
    # differences 1, 2, 3: mean 2, sd 1, se 1/√3, t = 2√3 on 2 df
    d = stats.paired_difference([3.0, 5.0, 4.0], [2.0, 3.0, 1.0])
    assert (d.mean, d.n) == (2.0, 3)
    t_975 = 0.95 / math.sqrt(2 * 0.975 * 0.025)  # df 2: (2p − 1)/√(2p(1 − p)) = 4.303
    assert d.half == pytest.approx(t_975 / math.sqrt(3), rel=1e-12)
    assert d.p == pytest.approx(1 - 2 * math.sqrt(3) / math.sqrt(14), rel=1e-12)  # 0.0742
    assert (d.low, d.high) == pytest.approx((2 - d.half, 2 + d.half))


def test_pairing_is_by_seed():
    by_seed = stats.paired({0: 1.0, 1: 5.0, 2: 2.0}, {2: 1.0, 0: 0.5, 3: 9.0})  # seeds 0 and 2 only
    assert by_seed == [0.5, 1.0]
    with pytest.raises(ValueError, match="one per seed"):
        stats.paired([1.0, 2.0], [1.0])
    with pytest.raises(TypeError):
        stats.paired({0: 1.0}, [1.0])


def test_equal_differences_have_no_spread():
    assert stats.mean_difference([0.2, 0.2, 0.2]) == stats.Difference(0.2, 0.0, 0.0, 3)
    assert stats.mean_difference([0.0, 0.0]).p == 1.0


def test_exact_tests_by_hand():
    assert stats.sign_flip_p([0.1, 0.3, 0.2, 0.5, 0.4]) == 0.0625 == stats.min_exact_p(5)
    assert stats.sign_test_p([0.1, 0.3, 0.2, 0.5, 0.4]) == 0.0625
    assert stats.sign_flip_p([1.0, 2.0, 3.0]) == 0.25 == stats.sign_test_p([1.0, 2.0, 3.0])
    # 3, −1, 2, 1: of the 16 sign patterns, |Σ| ≥ 5 for ±(3+1+2+1) and the two with one 1 flipped, each way
    assert stats.sign_flip_p([3.0, -1.0, 2.0, 1.0]) == 6 / 16
    assert stats.sign_test_p([3.0, -1.0, 2.0, 1.0]) == 2 * 5 / 16  # one negative of 4
    assert stats.sign_flip_p([1.0, -1.0]) == 1.0
    assert stats.sign_test_p([0.0, 0.0, 2.0]) == 1.0  # zeros dropped: one positive of one


def test_with_five_seeds_no_exact_test_reaches_five_percent():
    assert stats.min_exact_p(5) == 0.0625 > 0.05
    assert stats.min_exact_p(6) == 0.03125 < 0.05
    assert stats.holm([stats.min_exact_p(7)] * 3) == [3 / 64] * 3  # 7 seeds: three comparisons at most


# ------------------------------------------------------------------------------------------ Holm
def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 -> ×4, ×3, ×2, ×1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == [1.0, 1.0]  # capped at 1
    assert stats.holm([0.02]) == [0.02]
    assert stats.holm([]) == []


# ------------------------------------------------------------------------------- IQM, bootstrap
def test_iqm_by_hand():
    assert stats.iqm([8, 1, 7, 2, 6, 3, 5, 4]) == 4.5  # the middle four: 3, 4, 5, 6
    assert stats.iqm([5.0, 1.0, 100.0, 3.0, 2.0]) == pytest.approx(10 / 3)  # 2, 3, 5: the outlier cut
    assert stats.iqm([1.0, 2.0, 9.0]) == 4.0  # fewer than 4 values: the mean
    with pytest.raises(ValueError):
        stats.iqm([])


def test_bootstrap_interval_holds_the_statistic_of_the_data():
    values = [0.1, 0.4, 0.35, 0.2, 0.9]
    low, high = stats.bootstrap_interval(values, resamples=2000)
    assert min(values) <= low < stats.iqm(values) < high <= max(values)
    assert stats.bootstrap_interval(values, resamples=2000) == (low, high)  # seeded
    assert stats.bootstrap_interval([0.3] * 5) == (0.3, 0.3)


def test_stratified_bootstrap_resamples_within_each_stratum():
    def mean(xs):
        return sum(xs) / len(xs)

    # each stratum keeps its size, so the pooled mean of two constant strata never moves
    assert stats.bootstrap_interval([[0.0] * 5, [1.0] * 5], mean, resamples=500) == (0.5, 0.5)
    low, high = stats.bootstrap_interval([0.0] * 5 + [1.0] * 5, mean, resamples=500)  # one stratum: it does
    assert low < 0.5 < high


def test_bootstrap_of_a_large_sample_is_near_the_t_interval():
    values = [((i * 7919) % 101) / 100 for i in range(200)]  # spread over [0, 1]

    def mean(xs):
        return sum(xs) / len(xs)

    low, high = stats.bootstrap_interval(values, mean, resamples=4000)
    t = stats.mean_difference(values)
    assert (high - low) / 2 == pytest.approx(t.half, rel=0.1)


# -------------------------------------------------------------------------------------- verdicts
def test_verdict_is_the_holm_adjusted_p_against_alpha():
    assert stats.verdict(0.05) == stats.SEPARATED == "separated after correction"
    assert stats.verdict(0.0501) == stats.NOT_SEPARATED == "not separated"
    assert stats.verdict(0.09, alpha=0.1) == stats.SEPARATED


def test_compare_corrects_across_the_experiments_comparisons():
    strong = ([1.0, 1.1, 0.9, 1.2, 0.8], [0.0] * 5)  # t = 14.1 on 4 df: p = 1.5e-4
    weak = ([0.3, 0.5, 0.1, 0.4, 0.2], [0.0] * 5)  # t = 4.24: p = 0.0132, under 0.05 alone
    null = ([0.2, -0.1, 0.0, 0.1, -0.2], [0.0] * 5)  # p = 1
    alone = stats.compare({"weak": weak})
    assert alone[0].p == pytest.approx(0.013236, rel=1e-4) and alone[0].verdict == stats.SEPARATED
    three = stats.compare({"strong": strong, "weak": weak, "null": null})
    assert [c.name for c in three] == ["strong", "weak", "null"]
    assert [c.verdict for c in three] == [stats.SEPARATED, stats.SEPARATED, stats.NOT_SEPARATED]
    assert three[1].p_holm == pytest.approx(2 * 0.013236, rel=1e-4)  # second smallest of three: ×2
    five = stats.compare({"strong": strong, "weak": weak, "n1": null, "n2": null, "n3": null})
    assert five[1].p_holm == pytest.approx(4 * 0.013236, rel=1e-4)  # ×4 = 0.053: no longer separated
    assert five[1].verdict == stats.NOT_SEPARATED
    exact = stats.compare({"strong": strong}, test="sign_flip")
    assert exact[0].p == 0.0625 and exact[0].verdict == stats.NOT_SEPARATED  # 5 seeds: never below 0.0625
    assert str(three[0]).startswith("strong: +1.000 ± ") and str(three[0]).endswith(stats.SEPARATED)


def test_the_markdown_table_shows_every_comparison_with_its_verdict():
    comparisons = stats.compare(
        {"a − b": ([1.0, 2.0, 3.0], [0.0, 0.5, 1.0]), "c − d": ([1.0, 2.0], [1.0, 2.5])}
    )
    table = stats.markdown_table(comparisons, heading="test").splitlines()
    assert table[0] == "| test | Δ mean ± 95% t | p | Holm p | verdict |" and len(table) == 4
    first = comparisons[0]
    assert table[2] == (
        f"| a − b | {first.difference.mean:+.3f} ± {first.difference.half:.3f} | {first.p:.3g} | "
        f"{first.p_holm:.3g} | {first.verdict} |"
    )
