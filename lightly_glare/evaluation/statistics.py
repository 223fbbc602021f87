"""Paired differences over seeds with 95 % confidence intervals (no SciPy).

The experiment tools compare two models run with the same seeds (the same
head initialisation, data order and probe split per seed), so the unit of
analysis is the per-seed difference ``a[seed] - b[seed]``. Two intervals of
its mean:

- ``"t"``: the paired t interval ``mean ± t_{1-α/2, n-1} · sd / √n``
  (assumes roughly normal differences; exact under normality). The t
  quantile is computed here (:func:`student_t_quantile`: bisection on the
  CDF, itself the regularised incomplete beta function by Lentz's continued
  fraction, Numerical Recipes §6.4), so the library needs no SciPy.
- ``"bootstrap"``: the percentile bootstrap over seeds (resample the n
  differences with replacement, take the α/2 and 1-α/2 quantiles of the
  resampled means) with a seeded generator, so it is reproducible. With few
  seeds it is narrower than the t interval (it ignores the uncertainty of the
  standard deviation); report the t interval at n < 10.

Example:
    >>> glare = {0: 68.3, 1: 67.6, 2: 67.9}
    >>> none = {0: 67.6, 1: 67.6, 2: 67.6}
    >>> diff = paired_difference(glare, none)
    >>> f"{diff.mean:+.2f} [{diff.low:+.2f}, {diff.high:+.2f}]"
    '+0.33 [-0.54, +1.21]'
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

Method = Literal["t", "bootstrap"]
METHODS: tuple[Method, ...] = ("t", "bootstrap")


@dataclass(frozen=True)
class PairedDifference:
    """Mean of per-seed differences ``a - b`` and its confidence interval.

    Attributes:
        mean: Mean difference.
        low: Lower end of the interval.
        high: Upper end of the interval.
        n: Number of seeds (pairs).
        std: Sample standard deviation of the differences (ddof = 1).
        seeds: The paired seeds, sorted.
        differences: ``a[seed] - b[seed]`` in the order of ``seeds``.
        method: ``"t"`` (paired t) or ``"bootstrap"`` (percentile bootstrap).
        confidence: Coverage of the interval, e.g. 0.95.
    """

    mean: float
    low: float
    high: float
    n: int
    std: float
    seeds: tuple[int, ...]
    differences: tuple[float, ...]
    method: Method
    confidence: float

    def excludes_zero(self) -> bool:
        """Whether the interval lies entirely above or below 0."""
        return self.low > 0.0 or self.high < 0.0

    def format(self, digits: int = 2) -> str:
        """``"+0.33 [-0.54, +1.21]"``: mean and interval, signed."""
        return (
            f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"
        )


def paired_difference(
    a: Mapping[int, float],
    b: Mapping[int, float],
    confidence: float = 0.95,
    method: Method = "t",
    resamples: int = 10_000,
    seed: int = 0,
) -> PairedDifference:
    """Mean of ``a[s] - b[s]`` over the seeds ``s`` and its confidence interval.

    Args:
        a: Result per seed of the first model (e.g. GLARE's mIoU).
        b: Result per seed of the second model, with exactly the same seeds.
        confidence: Coverage of the interval in (0, 1). Defaults to 0.95.
        method: ``"t"`` (paired t interval, default) or ``"bootstrap"``
            (percentile bootstrap of the mean difference).
        resamples: Bootstrap resamples. Defaults to 10,000.
        seed: Seed of the bootstrap's generator. Defaults to 0.

    Returns:
        The difference ``a - b``.

    Raises:
        ValueError: If the two sides have different seeds, fewer than two
            seeds, a non-finite value, or ``confidence`` / ``method`` /
            ``resamples`` is invalid.
    """
    if set(a) != set(b):
        raise ValueError(
            "A paired difference needs the same seeds on both sides, got "
            f"{sorted(a)} and {sorted(b)} (only in the first: "
            f"{sorted(set(a) - set(b))}, only in the second: "
            f"{sorted(set(b) - set(a))})."
        )
    if len(a) < 2:
        raise ValueError(
            f"A confidence interval needs at least 2 paired seeds, got {sorted(a)}."
        )
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}.")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    seeds = tuple(sorted(a))
    values = np.array([float(a[s]) - float(b[s]) for s in seeds], dtype=np.float64)
    if not np.isfinite(values).all():
        bad = [s for s, v in zip(seeds, values, strict=True) if not np.isfinite(v)]
        raise ValueError(f"Non-finite paired differences at seeds {bad}.")
    n = len(values)
    mean = float(values.mean())
    std = float(values.std(ddof=1))
    alpha = 1.0 - confidence
    if method == "t":
        half = student_t_quantile(1.0 - alpha / 2, n - 1) * std / math.sqrt(n)
        low, high = mean - half, mean + half
    else:
        if resamples < 1:
            raise ValueError(f"resamples must be positive, got {resamples}.")
        generator = np.random.default_rng(seed)
        draws = generator.integers(0, n, size=(resamples, n))  # (R, n) indices
        means = values[draws].mean(axis=1)  # (R,)
        low, high = (float(q) for q in np.quantile(means, [alpha / 2, 1 - alpha / 2]))
        # Rounding must not put a constant difference outside its interval.
        low, high = min(low, mean), max(high, mean)
    return PairedDifference(
        mean=mean,
        low=float(low),
        high=float(high),
        n=n,
        std=std,
        seeds=seeds,
        differences=tuple(float(v) for v in values),
        method=method,
        confidence=confidence,
    )


def student_t_cdf(x: float, df: float) -> float:
    """CDF of Student's t distribution with ``df`` degrees of freedom.

    Args:
        x: Where to evaluate.
        df: Degrees of freedom (positive).

    Returns:
        ``P(T <= x)``.
    """
    if df <= 0:
        raise ValueError(f"df must be positive, got {df}.")
    tail = 0.5 * _regularized_beta(df / (df + x * x), df / 2.0, 0.5)
    return 1.0 - tail if x > 0 else tail


def student_t_quantile(p: float, df: float) -> float:
    """Quantile of Student's t distribution (inverse of :func:`student_t_cdf`).

    Args:
        p: Probability in (0, 1).
        df: Degrees of freedom (positive).

    Returns:
        ``x`` with ``P(T <= x) = p``, to about 1e-12.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}.")
    if p < 0.5:
        return -student_t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while student_t_cdf(high, df) < p:  # bracket: the t tails are heavy
        low, high = high, 2.0 * high
    for _ in range(200):
        middle = 0.5 * (low + high)
        if student_t_cdf(middle, df) < p:
            low = middle
        else:
            high = middle
        if high - low <= 1e-13 * max(1.0, high):
            break
    return 0.5 * (low + high)


def _regularized_beta(x: float, a: float, b: float) -> float:
    """The regularised incomplete beta function I_x(a, b), x in [0, 1]."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b)
        - math.lgamma(a)
        - math.lgamma(b)
        + a * math.log(x)
        + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):  # the continued fraction converges fast
        return front * _beta_fraction(x, a, b) / a
    return 1.0 - front * _beta_fraction(1.0 - x, b, a) / b


def _beta_fraction(x: float, a: float, b: float) -> float:
    """Continued fraction of I_x(a, b) by the modified Lentz method."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return result
