"""Gao et al. (2022)'s overoptimization forms, fitted by least squares, and intervals over seeds.

With d = √KL(π ‖ π_init) and R the reward gained over the starting policy (so R(0) = 0):

    best-of-n   R(d) = d (α − β d)          peak for α, β > 0:  d* = α / (2β),        R* = α² / (4β)
    RL          R(d) = d (α − β log d)      peak for β > 0:     d* = exp(α/β − 1),    R* = β d*

Both are linear in (α, β) given d, so a fit is one least-squares solve; at d = 0 both regressors are 0
(d log d → 0), so a point at d = 0 predicts R = 0. Over seeds, `fit_seeds` refits on seeds drawn with
replacement (all of a seed's points together) and gives percentile intervals for α, β, d* and R*; a
replicate without a peak counts as d* = R* = +∞ (the curve rises without bound), so an upper bound of ∞
says the data do not establish a peak. `mean_interval` is the mean ± 95% t-interval that every table
of the report gives. Pure numpy: no plotting, nothing of rlhf_lab.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from rlhf_lab.report.stats import t_quantile

FORMS = ("bon", "rl")
LEVEL = 0.95
BOOTSTRAP_SAMPLES = 2000
PARAMETERS = ("alpha", "beta", "d_star", "r_star")


# ------------------------------------------------------------------------------------------ the forms
def design(form: str, d) -> np.ndarray:
    """The regressors (N, 2) of R = α·x₀ + β·x₁: bon (d, −d²), RL (d, −d log d), 0 at d = 0."""
    d = np.asarray(d, dtype=np.float64)
    if form not in FORMS:
        raise ValueError(f"form {form!r}: expected one of {FORMS}")
    if np.any(d < 0) or not np.all(np.isfinite(d)):
        raise ValueError("d = √KL must be finite and ≥ 0")
    second = -d * d if form == "bon" else -d * np.log(np.where(d > 0, d, 1.0))
    return np.stack([d, second], axis=-1)


def predict(form: str, alpha: float, beta: float, d) -> np.ndarray:
    """R(d) of the form with coefficients (α, β)."""
    return design(form, d) @ np.array([alpha, beta], dtype=np.float64)


def peak(form: str, alpha, beta) -> tuple[np.ndarray, np.ndarray]:
    """(d*, R*) of the form's maximum over d > 0; NaN where it has none (β ≤ 0, or bon with α ≤ 0).
    Works elementwise on arrays."""
    alpha, beta = np.asarray(alpha, dtype=np.float64), np.asarray(beta, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if form == "bon":
            exists = (beta > 0) & (alpha > 0)
            d_star, r_star = alpha / (2 * beta), alpha * alpha / (4 * beta)
        elif form == "rl":
            exists = beta > 0
            d_star = np.exp(alpha / beta - 1)
            r_star = beta * d_star
        else:
            raise ValueError(f"form {form!r}: expected one of {FORMS}")
    return np.where(exists, d_star, np.nan), np.where(exists, r_star, np.nan)


# -------------------------------------------------------------------------------------------- a fit
@dataclass(frozen=True)
class Fit:
    """A least-squares fit of one form: coefficients, R² and the peak (NaN where there is none)."""

    form: str
    alpha: float
    beta: float
    r2: float
    points: int

    @property
    def d_star(self) -> float:
        return float(peak(self.form, self.alpha, self.beta)[0])

    @property
    def r_star(self) -> float:
        return float(peak(self.form, self.alpha, self.beta)[1])

    @property
    def has_peak(self) -> bool:
        return math.isfinite(self.d_star)

    def __call__(self, d) -> np.ndarray:
        return predict(self.form, self.alpha, self.beta, d)


def fit(form: str, d, r) -> Fit:
    """Least squares of R(d) on the points (d, R); R² = 1 − SS_res / SS_tot (about the mean of R;
    can be negative, the forms have no intercept)."""
    x, r = design(form, d), np.asarray(r, dtype=np.float64)
    if x.shape[0] != r.shape[0]:
        raise ValueError(f"{x.shape[0]} values of d but {r.shape[0]} of R")
    if not np.any(x[:, 0] > 0):
        raise ValueError("no point with d > 0: nothing to fit")
    (alpha, beta), *_ = np.linalg.lstsq(x, r, rcond=None)
    residual = r - x @ np.array([alpha, beta])
    total = float(np.sum((r - r.mean()) ** 2))
    r2 = 1 - float(residual @ residual) / total if total > 0 else float("nan")
    return Fit(form, float(alpha), float(beta), r2, len(r))


# ---------------------------------------------------------------------------------- over the seeds
@dataclass(frozen=True)
class SeedFit:
    """The fit on all seeds' points pooled, and percentile intervals from resampling the seeds.

    intervals: parameter -> (low, high), NaN with fewer than two seeds; peak_share: the share of
    bootstrap replicates whose curve has a peak."""

    fit: Fit
    seeds: int
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    peak_share: float = float("nan")

    def estimate(self, name: str) -> float:
        return float(getattr(self.fit, name))


def fit_seeds(
    form: str,
    curves: Sequence[tuple[Sequence[float], Sequence[float]]],
    samples: int = BOOTSTRAP_SAMPLES,
    level: float = LEVEL,
    seed: int = 0,
) -> SeedFit:
    """Fit `form` on the points of every seed's curve (d, R), with bootstrap intervals over seeds."""
    if not curves:
        raise ValueError("no curves to fit")
    pooled = fit(form, np.concatenate([c[0] for c in curves]), np.concatenate([c[1] for c in curves]))
    nan = (float("nan"), float("nan"))
    if len(curves) < 2:
        return SeedFit(pooled, len(curves), dict.fromkeys(PARAMETERS, nan))
    alpha, beta = bootstrap(form, curves, samples, seed)
    d_star, r_star = peak(form, alpha, beta)
    share = float(np.mean(np.isfinite(d_star)))
    draws = {
        "alpha": alpha,
        "beta": beta,
        "d_star": np.nan_to_num(d_star, nan=np.inf),
        "r_star": np.nan_to_num(r_star, nan=np.inf),
    }
    intervals = {name: percentile_interval(values, level) for name, values in draws.items()}
    return SeedFit(pooled, len(curves), intervals, share)


def bootstrap(form: str, curves, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0):
    """(α, β) of `samples` refits, each on as many seeds drawn with replacement as there are.

    A seed's points enter a fit only through XᵀX and Xᵀy, so each replicate sums the drawn seeds'
    normal equations and solves them (pseudo-inverse: a draw of seeds without a point at d > 0 gives
    a minimum-norm answer instead of an error)."""
    grams, moments = [], []
    for d, r in curves:
        x = design(form, d)
        grams.append((x.T @ x).ravel())
        moments.append(x.T @ np.asarray(r, dtype=np.float64))
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(curves), np.full(len(curves), 1 / len(curves)), size=samples)  # (B, S)
    gram = (counts @ np.array(grams)).reshape(samples, 2, 2)
    moment = counts @ np.array(moments)  # (B, 2)
    coefficients = np.einsum("bij,bj->bi", np.linalg.pinv(gram), moment)
    return coefficients[:, 0], coefficients[:, 1]


def percentile_interval(values, level: float = LEVEL) -> tuple[float, float]:
    """The (1−level)/2 and (1+level)/2 quantiles of the draws, each an actual draw (so ±∞ survive)."""
    tail = (1 - level) / 2
    low, high = np.quantile(np.asarray(values, dtype=np.float64), [tail, 1 - tail], method="inverted_cdf")
    return float(low), float(high)


# ------------------------------------------------------------------------- mean ± interval over seeds
def mean_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float]:
    """(mean, half-width of the t-interval at `level`) over seeds; half-width NaN below two values."""
    x = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if x.size == 0:
        return float("nan"), float("nan")
    if x.size == 1:
        return float(x[0]), float("nan")
    half = t_quantile((1 + level) / 2, x.size - 1) * float(x.std(ddof=1)) / math.sqrt(x.size)
    return float(x.mean()), half


def format_interval(values: Sequence[float], digits: int = 3) -> str:
    """ "mean ± half-width" over seeds; the value alone for one seed; "–" for none."""
    mean, half = mean_interval(values)
    if math.isnan(mean):
        return "–"
    return f"{mean:.{digits}f}" if math.isnan(half) else f"{mean:.{digits}f} ± {half:.{digits}f}"


def seed_band(series: Sequence[dict], level: float = LEVEL):
    """(keys, mean, low, high) over the seeds' series (key -> value), on the keys they all share:
    mean ± t-interval; low = high = mean for one seed. None without series or shared keys."""
    if not series:
        return None
    keys = sorted(set.intersection(*(set(s) for s in series)))
    if not keys:
        return None
    stats = [mean_interval([s[k] for s in series], level) for k in keys]
    mean = [m for m, _ in stats]
    half = [0.0 if math.isnan(h) else h for _, h in stats]
    return (
        keys,
        mean,
        [m - h for m, h in zip(mean, half, strict=True)],
        [m + h for m, h in zip(mean, half, strict=True)],
    )


def gains(d, r, tolerance: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """A curve as Gao's forms take it: (d, R − R(start)), its first point the start (RL's step 0,
    best-of-n's n = 1). Raises if the first point is not at d ≈ 0: the start is then unknown."""
    d, r = np.asarray(d, dtype=np.float64), np.asarray(r, dtype=np.float64)
    if d.size == 0 or d[0] > tolerance:
        raise ValueError(f"the first point is not at d = 0 (d = {d[0] if d.size else 'none'}): no start")
    return d, r - r[0]
