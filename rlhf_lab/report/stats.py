"""The statistics of a comparison over seeds, as pure functions of plain numbers (no numpy, no scipy).

    paired_difference   per-seed differences a − b: mean, 95% t-interval, two-sided paired t-test
    sign_flip_p / sign_test_p   exact paired tests (no normality); with n seeds the smallest two-sided
                        p is 2^(1−n): 0.0625 with 5 seeds, so an exact test needs ≥ 6 seeds to reach 0.05
    holm                Holm's step-down adjusted p-values over an experiment's comparisons
    iqm, bootstrap_interval   the interquartile mean and a (stratified) percentile bootstrap interval
                        (Agarwal et al. 2021, "Deep RL at the edge of the statistical precipice")
    verdict, compare    the one rule that turns the numbers into "separated after correction" / "not
                        separated" (Henderson et al. 2018, "Deep RL that matters"; Holm 1979)

Student's t is exact: its CDF is the regularized incomplete beta function (Abramowitz & Stegun 26.7.1),
evaluated by its continued fraction (A&S 26.5.8, modified Lentz; Numerical Recipes §6.4), and a
quantile is that CDF inverted by bisection to machine precision.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

LEVEL = 0.95
ALPHA = 0.05
SEPARATED, NOT_SEPARATED = "separated after correction", "not separated"

Values = Sequence[float] | Mapping[object, float]  # per seed: a list in seed order, or seed -> value


# ------------------------------------------------------------------------------------ Student's t
def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b) (A&S 26.5.8 continued fraction)."""
    if not (a > 0 and b > 0 and 0 <= x <= 1):
        raise ValueError(f"betainc needs a, b > 0 and 0 ≤ x ≤ 1, got a={a}, b={b}, x={x}")
    if x in (0, 1):
        return float(x)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1) / (a + b + 2):  # the fraction converges fast here; else use I_x(a,b) = 1 − I_{1−x}(b,a)
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1 - math.exp(log_front) * _beta_fraction(b, a, 1 - x) / b


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b) by the modified Lentz method (Numerical Recipes' betacf)."""
    tiny = 1e-300

    def guard(v: float) -> float:
        return v if abs(v) > tiny else tiny

    c, d = 1.0, 1 / guard(1 - (a + b) * x / (a + 1))
    h = d
    for m in range(1, 10_000):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1 / guard(1 + numerator * d)
            c = guard(1 + numerator / c)
            h *= d * c
        if abs(d * c - 1) < 1e-16:
            return h
    raise ArithmeticError(f"the continued fraction of I_{x}({a}, {b}) did not converge")


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| ≥ |t|) for Student's t with df degrees of freedom: I_{df/(df+t²)}(df/2, 1/2) (A&S 26.7.1)."""
    if math.isinf(t):
        return 0.0
    return betainc(df / 2, 0.5, df / (df + t * t))


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with df degrees of freedom (exact to rounding): t_{0.975} is 12.706
    for df 1 and 2.776 for df 4. Inverts the CDF by bisection: in x = df/(df + t²) on the tails
    (P(|T| ≥ t) = I_x(df/2, ½)), in u = 1 − x near the centre (P(|T| < t) = I_u(½, df/2)), so that
    neither loses digits."""
    if not (0 < p < 1 and df > 0):
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p == 0.5:
        return 0.0
    if abs(p - 0.5) > 0.25:
        x = _bisect(lambda x: betainc(df / 2, 0.5, x), 2 * min(p, 1 - p))
        t = math.sqrt(df * (1 - x) / x)
    else:
        u = _bisect(lambda u: betainc(0.5, df / 2, u), abs(2 * p - 1))
        t = math.sqrt(df * u / (1 - u))
    return t if p > 0.5 else -t


def _bisect(increasing: Callable[[float], float], target: float) -> float:
    """The x in [0, 1] where an increasing function reaches `target`, to the last representable digit."""
    low, high = 0.0, 1.0
    while (middle := (low + high) / 2) not in (low, high):
        low, high = (middle, high) if increasing(middle) < target else (low, middle)
    return (low + high) / 2


# -------------------------------------------------------------------------------- paired by seed
def paired(a: Values, b: Values) -> list[float]:
    """The per-seed differences a − b: lists are paired by position (and must be as long), mappings by
    seed (the seeds both have, in sorted order)."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return [a[s] - b[s] for s in sorted(a.keys() & b.keys(), key=str)]
    if isinstance(a, Mapping) or isinstance(b, Mapping):
        raise TypeError("pair two mappings (seed -> value) or two sequences, not one of each")
    if len(a) != len(b):
        raise ValueError(f"paired values need one per seed on both sides, got {len(a)} and {len(b)}")
    return [x - y for x, y in zip(a, b, strict=True)]


@dataclass(frozen=True)
class Difference:
    """Mean of n per-seed differences, its t-interval at `level` (mean ± half) and the paired t-test's
    two-sided p-value (Student 1908): t = mean / (sd/√n), df = n − 1."""

    mean: float
    half: float
    p: float
    n: int
    level: float = LEVEL

    @property
    def low(self) -> float:
        return self.mean - self.half

    @property
    def high(self) -> float:
        return self.mean + self.half


def paired_difference(a: Values, b: Values, level: float = LEVEL) -> Difference:
    """a − b seed by seed (`paired`): mean, t-interval and paired t-test. Differences that are all equal
    give a zero-width interval and p = 0 (1 if they are all 0)."""
    return mean_difference(paired(a, b), level)


def mean_difference(differences: Sequence[float], level: float = LEVEL) -> Difference:
    """`Difference` of differences already paired (a one-sample t-test of mean 0)."""
    n = len(differences)
    if n < 2:
        raise ValueError(f"a t-interval needs at least 2 paired seeds, got {n}")
    if min(differences) == max(differences):  # no spread: no interval, and p is 0 or 1
        return Difference(differences[0], 0.0, 1.0 if differences[0] == 0 else 0.0, n, level)
    mean = math.fsum(differences) / n
    se = math.sqrt(math.fsum((d - mean) ** 2 for d in differences) / (n - 1) / n)
    half = t_quantile((1 + level) / 2, n - 1) * se
    return Difference(mean, half, t_two_sided_p(mean / se, n - 1), n, level)


def sign_flip_p(differences: Sequence[float]) -> float:
    """Exact two-sided permutation p-value of paired differences (Fisher 1935): under the null each
    difference's sign is a fair coin, so p is the share of the 2^n sign patterns whose |mean| reaches the
    observed one. Smallest possible p: 2^(1−n) (0.0625 for 5 seeds, 0.125 for 4, 0.25 for 3)."""
    n = len(differences)
    if not 1 <= n <= 20:
        raise ValueError(f"the exact test enumerates 2^n sign patterns: 1 ≤ n ≤ 20, got {n}")
    observed = abs(math.fsum(differences))
    slack = 1e-12 * max(1.0, math.fsum(abs(d) for d in differences))  # ties up to rounding count as reached
    hits = sum(
        abs(math.fsum(s * d for s, d in zip(signs, differences, strict=True))) >= observed - slack
        for signs in itertools.product((1, -1), repeat=n)
    )
    return hits / 2**n


def sign_test_p(differences: Sequence[float]) -> float:
    """Exact two-sided sign test: zero differences dropped, the count of positive ones against
    Binomial(n, ½); p = min(1, 2·P(X ≤ min(k, n − k))). All 5 seeds one way: 0.0625; all 3: 0.25
    (0.125 one-sided)."""
    positive, negative = sum(d > 0 for d in differences), sum(d < 0 for d in differences)
    n = positive + negative
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(positive, negative) + 1)) / 2**n
    return min(1.0, 2 * tail)


def min_exact_p(n: int) -> float:
    """The smallest two-sided p-value an exact paired test (sign or sign-flip) can give with n seeds:
    2^(1−n). After Holm over m comparisons a difference can be separated only if 2^(1−n) ≤ α/m."""
    return 2.0 ** (1 - n)


# ---------------------------------------------------------------------------- multiple comparisons
def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's (1979) step-down adjusted p-values, in the input's order: with p sorted ascending,
    p̃_(i) = max_{j ≤ i} min(1, (m − j + 1)·p_(j)). Rejecting where p̃ ≤ α controls the family-wise
    error rate at α over the m comparisons, under any dependence between them."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


# --------------------------------------------------------------------------- few-seed aggregates
def iqm(values: Sequence[float]) -> float:
    """Interquartile mean (Agarwal et al. 2021): the mean of the values left after ⌊n/4⌋ are cut from each
    end of the sorted list (rliable's scipy.stats.trim_mean(x, 0.25)); the mean itself below 4 values."""
    if not values:
        raise ValueError("the IQM of no values")
    cut = len(values) // 4
    kept = sorted(values)[cut : len(values) - cut]
    return math.fsum(kept) / len(kept)


def bootstrap_interval(
    strata: Sequence[Sequence[float]] | Sequence[float],
    statistic: Callable[[list[float]], float] = iqm,
    level: float = LEVEL,
    resamples: int = 10_000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic` (Efron 1979), stratified as in Agarwal et al. 2021:
    each stratum (a task, a prompt set, …; a flat list is one stratum) is resampled with replacement on
    its own, and the statistic is taken over all resampled values together. Bounds are actual draws
    (the inverted empirical CDF). With 5 seeds a stratum has only 126 distinct resamples and the
    percentile interval runs narrow: read it beside the t-interval, not instead of it."""
    groups = [list(s) for s in strata] if strata and isinstance(strata[0], Sequence) else [list(strata)]
    if not all(groups):
        raise ValueError("every stratum needs at least one value")
    rng = random.Random(seed)
    draws = sorted(statistic([v for g in groups for v in rng.choices(g, k=len(g))]) for _ in range(resamples))
    tail = (1 - level) / 2
    low = draws[max(0, math.ceil(tail * resamples) - 1)]
    high = draws[min(resamples - 1, math.ceil((1 - tail) * resamples) - 1)]
    return low, high


# -------------------------------------------------------------------------------------- verdicts
def verdict(p_adjusted: float, alpha: float = ALPHA) -> str:
    """The words of a comparison, from its multiplicity-adjusted p-value: the one rule of every write-up."""
    return SEPARATED if p_adjusted <= alpha else NOT_SEPARATED


@dataclass(frozen=True)
class Comparison:
    """One comparison a − b of an experiment: the paired difference, the test's p, Holm's p over the
    experiment's comparisons, and the verdict they give."""

    name: str
    difference: Difference
    p: float
    p_holm: float
    verdict: str

    def __str__(self) -> str:
        d = self.difference
        return (
            f"{self.name}: {d.mean:+.3f} ± {d.half:.3f} (n={d.n}, p={self.p:.3g}, Holm p={self.p_holm:.3g}): "
            f"{self.verdict}"
        )


def markdown_table(comparisons: Sequence[Comparison], heading: str = "comparison (paired by seed)") -> str:
    """The comparisons as a Markdown table: name, Δ mean ± 95% t, p, Holm p, verdict."""
    lines = [f"| {heading} | Δ mean ± 95% t | p | Holm p | verdict |", "|---|---:|---:|---:|---|"]
    for c in comparisons:
        d = c.difference
        cells = [c.name, f"{d.mean:+.3f} ± {d.half:.3f}", f"{c.p:.3g}", f"{c.p_holm:.3g}", c.verdict]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


TESTS: dict[str, Callable[[list[float]], float]] = {
    "t": lambda differences: mean_difference(differences).p,
    "sign_flip": sign_flip_p,
    "sign": sign_test_p,
}


def compare(
    comparisons: Mapping[str, tuple[Values, Values]],
    test: str = "t",
    alpha: float = ALPHA,
    level: float = LEVEL,
) -> list[Comparison]:
    """Every comparison name -> (a, b) of one experiment, paired by seed, its p-value from `test` (the paired
    t-test, the exact sign-flip test or the sign test), Holm-adjusted over all of them, and the verdict."""
    differences = {name: paired(a, b) for name, (a, b) in comparisons.items()}
    p = [TESTS[test](d) for d in differences.values()]
    return [
        Comparison(name, mean_difference(d, level), p_i, p_holm, verdict(p_holm, alpha))
        for (name, d), p_i, p_holm in zip(differences.items(), p, holm(p), strict=True)
    ]
