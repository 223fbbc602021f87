"""lightly_glare.evaluation.statistics: paired differences and their intervals."""

import math

import numpy as np
import pytest

from lightly_glare.evaluation import paired_difference
from lightly_glare.evaluation.statistics import student_t_cdf, student_t_quantile

#: Two-sided 95 % critical values t_{0.975, df} of the textbook tables.
T_TABLE = {1: 12.706, 2: 4.303, 3: 3.182, 5: 2.571, 7: 2.365, 10: 2.228, 30: 2.042}

A = {0: 68.27, 1: 67.63, 2: 67.93, 3: 68.80, 4: 67.10, 5: 68.02, 6: 67.51, 7: 68.4}
B = {0: 67.65, 1: 67.65, 2: 67.64, 3: 67.70, 4: 67.20, 5: 67.61, 6: 67.66, 7: 67.6}


@pytest.mark.parametrize("df", sorted(T_TABLE))
def test_t_quantile_matches_the_table(df: int) -> None:
    assert student_t_quantile(0.975, df) == pytest.approx(T_TABLE[df], abs=5e-4)
    assert student_t_quantile(0.025, df) == pytest.approx(-T_TABLE[df], abs=5e-4)
    assert student_t_cdf(student_t_quantile(0.9, df), df) == pytest.approx(0.9)


@pytest.mark.parametrize("df", [1, 2, 4, 7, 15, 100])
@pytest.mark.parametrize("x", [-4.0, -1.3, 0.0, 0.4, 2.5])
def test_t_cdf_and_quantile_match_scipy(df: int, x: float) -> None:
    stats = pytest.importorskip("scipy.stats")
    assert student_t_cdf(x, df) == pytest.approx(stats.t.cdf(x, df), abs=1e-12)
    p = float(stats.t.cdf(x, df))
    assert student_t_quantile(p, df) == pytest.approx(x, abs=1e-9)


def test_paired_t_interval_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    diff = paired_difference(A, B)
    values = np.array([A[s] - B[s] for s in sorted(A)])
    low, high = stats.t.interval(
        0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values)
    )
    assert (diff.low, diff.high) == (pytest.approx(low), pytest.approx(high))
    assert diff.mean == pytest.approx(values.mean())
    assert diff.n == 8 and diff.seeds == tuple(range(8)) and diff.method == "t"


def test_paired_t_interval_by_hand() -> None:
    # Differences 1, 2, 3: mean 2, sd 1, half-width t_{0.975,2} / sqrt(3).
    diff = paired_difference({0: 1.0, 1: 2.0, 2: 3.0}, {0: 0.0, 1: 0.0, 2: 0.0})
    half = 4.302652729749 / math.sqrt(3)
    assert diff.mean == 2.0 and diff.std == pytest.approx(1.0)
    assert (diff.low, diff.high) == (pytest.approx(2 - half), pytest.approx(2 + half))
    assert not diff.excludes_zero() and diff.format() == "+2.00 [-0.48, +4.48]"


@pytest.mark.parametrize("method", ["t", "bootstrap"])
def test_interval_invariances(method: str) -> None:
    diff = paired_difference(A, B, method=method)  # type: ignore[arg-type]
    shifted = paired_difference(
        {s: v + 3.5 for s, v in A.items()},
        {s: v + 3.5 for s, v in B.items()},
        method=method,  # type: ignore[arg-type]
    )
    assert (shifted.mean, shifted.low, shifted.high) == pytest.approx(
        (diff.mean, diff.low, diff.high)
    )
    swapped = paired_difference(B, A, method=method)  # type: ignore[arg-type]
    assert (swapped.mean, swapped.low, swapped.high) == pytest.approx(
        (-diff.mean, -diff.high, -diff.low)
    )
    assert diff.low <= diff.mean <= diff.high


def test_bootstrap_is_seeded_and_inside_the_data_range() -> None:
    first = paired_difference(A, B, method="bootstrap", seed=3)
    assert first == paired_difference(A, B, method="bootstrap", seed=3)
    differences = [A[s] - B[s] for s in A]
    assert min(differences) <= first.low < first.high <= max(differences)
    # The percentile bootstrap is narrower than the t interval at n = 8.
    t = paired_difference(A, B)
    assert first.high - first.low < t.high - t.low
    constant = paired_difference({0: 1.0, 1: 1.0}, {0: 0.0, 1: 0.0}, method="bootstrap")
    assert constant.low == constant.mean == constant.high == 1.0


def test_paired_difference_refuses_unpaired_or_too_few_seeds() -> None:
    with pytest.raises(ValueError, match=r"only in the first: \[2\]"):
        paired_difference({0: 1.0, 1: 2.0, 2: 3.0}, {0: 1.0, 1: 1.0})
    with pytest.raises(ValueError, match="at least 2 paired seeds"):
        paired_difference({0: 1.0}, {0: 0.5})
    with pytest.raises(ValueError, match="Non-finite"):
        paired_difference({0: 1.0, 1: math.nan}, {0: 0.0, 1: 0.0})
    with pytest.raises(ValueError, match="confidence"):
        paired_difference(A, B, confidence=95)
    with pytest.raises(ValueError, match="method"):
        paired_difference(A, B, method="z")  # type: ignore[arg-type]
