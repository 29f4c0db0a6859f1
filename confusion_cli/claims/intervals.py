"""95% intervals for the effect of a claim, and its standardised size.

- ``paired``: the mean of the per-seed differences d_i = a_i - b_i, with the Student-t interval
  mean(d) +- t_{0.975, n-1} sd(d) / sqrt(n);
- ``welch``: mean(a) - mean(b) +- t_{0.975, nu} se, se^2 = s_a^2/n_a + s_b^2/n_b and the
  Welch-Satterthwaite nu = se^4 / ((s_a^2/n_a)^2/(n_a-1) + (s_b^2/n_b)^2/(n_b-1));
- ``bootstrap``: the BCa interval of mean(a) - mean(b), each arm resampled on its own
  (``scipy.stats.bootstrap``, 10,000 resamples, a fixed seed: the same records give the same
  interval);
- ``ols_slope``: the OLS slope of y on x +- t_{0.975, n-2} se, se the usual
  sqrt(sum(residual^2) / (n-2) / sum((x - mean x)^2)), and Pearson's r;
- ``hedges_g``: (mean(a) - mean(b)) / s_pooled times J = 1 - 3 / (4 (n_a + n_b) - 9).

Standard deviations are the sample ones (ddof=1). With no spread at all (se = 0) an interval
is the point itself. scipy is imported inside the functions, when a claim is decided.
"""

from __future__ import annotations

import inspect
import math
import warnings
from typing import NamedTuple

import numpy as np

LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


class Interval(NamedTuple):
    effect: float
    low: float
    high: float


def t_interval(effect: float, se: float, df: float) -> Interval:
    """effect +- t_{(1 + LEVEL) / 2, df} se (the point itself when se is 0)."""
    from scipy import stats

    if se == 0:
        return Interval(effect, effect, effect)
    half = float(stats.t.ppf(0.5 + LEVEL / 2, df)) * se
    return Interval(effect, effect - half, effect + half)


def paired(a: np.ndarray, b: np.ndarray) -> Interval:
    """The mean of a - b (paired element by element, at least 2 pairs) with its t interval."""
    d = np.asarray(a, float) - np.asarray(b, float)
    return t_interval(float(d.mean()), float(d.std(ddof=1)) / math.sqrt(d.size), d.size - 1)


def welch(a: np.ndarray, b: np.ndarray) -> Interval:
    """mean(a) - mean(b) with the Welch-Satterthwaite t interval (at least 2 values each)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1)) if se > 0 else math.nan
    return t_interval(float(a.mean() - b.mean()), se, df)


def bootstrap(a: np.ndarray, b: np.ndarray) -> Interval:
    """mean(a) - mean(b) with its BCa bootstrap interval (NaN where BCa is undefined, e.g. when
    every resample gives the same difference)."""
    from scipy import stats

    a, b = np.asarray(a, float), np.asarray(b, float)
    effect = float(a.mean() - b.mean())
    # the generator's keyword: `rng` from scipy 1.15, `random_state` before it
    seed_key = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate data: BCa gives NaN, which says it
        result = stats.bootstrap((a, b), lambda x, y, axis: x.mean(axis) - y.mean(axis),
                                 vectorized=True, n_resamples=BOOTSTRAP_RESAMPLES, method="BCa",
                                 confidence_level=LEVEL,
                                 **{seed_key: np.random.default_rng(BOOTSTRAP_SEED)})
    return Interval(effect, float(result.confidence_interval.low), float(result.confidence_interval.high))


def ols_slope(x: np.ndarray, y: np.ndarray) -> tuple[Interval, float]:
    """(the OLS slope of y on x with its t interval on n - 2 df, Pearson's r); x must vary and
    there must be at least 3 points."""
    from scipy import stats

    fit = stats.linregress(np.asarray(x, float), np.asarray(y, float))
    return t_interval(float(fit.slope), float(fit.stderr), len(x) - 2), float(fit.rvalue)


def hedges_g(a: np.ndarray, b: np.ndarray) -> float:
    """Hedges' g of mean(a) - mean(b): the difference over the pooled SD, bias-corrected; NaN
    with fewer than 2 values in an arm or no spread."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.size < 2 or b.size < 2:
        return math.nan
    pooled = math.sqrt(((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / (a.size + b.size - 2))
    if pooled == 0:
        return math.nan
    return (1 - 3 / (4 * (a.size + b.size) - 9)) * float(a.mean() - b.mean()) / pooled
