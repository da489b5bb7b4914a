"""Intervals over seeds and the verdicts computed from them."""

import numpy as np
import pytest
from scipy import stats as scipy_stats

from experiments import stats


def test_interval_matches_the_t_formula():
    values = [0.1, 0.3, 0.2, 0.25]
    got = stats.interval(values)
    sd = np.std(values, ddof=1)
    half = scipy_stats.t.ppf(0.975, 3) * sd / 2.0
    assert got.mean == pytest.approx(0.2125)
    assert got.low == pytest.approx(0.2125 - half)
    assert got.high == pytest.approx(0.2125 + half)
    assert got.n == 4


def test_interval_coverage_by_simulation():
    rng = np.random.default_rng(0)
    draws = rng.normal(1.0, 2.0, size=(4000, 3))
    hits = [iv.low <= 1.0 <= iv.high for iv in map(stats.interval, draws)]
    assert abs(np.mean(hits) - 0.95) < 0.015


def test_paired_differences():
    a, b = [1.0, 2.0, 3.0], [1.5, 2.4, 3.6]
    assert stats.paired(a, b).mean == pytest.approx(0.5)
    with pytest.raises(ValueError, match="b: expected the shape of a"):
        stats.paired(a, b[:2])


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0.5, 0.6, 0.55], "held"),
        ([-0.5, -0.6, -0.55], "not held"),
        ([-0.5, 0.6, 0.1], "inconclusive"),
        ([0.5], "inconclusive"),
    ],
)
def test_verdict_above_zero(values, expected):
    assert stats.verdict("b beats a", stats.interval(values), above=0.0).outcome == expected


def test_verdict_below_threshold():
    iv = stats.interval([-0.5, -0.49, -0.51])
    assert stats.verdict("ECE falls by 40%", iv, below=-0.4).outcome == "held"
    assert stats.verdict("ECE falls by 60%", iv, below=-0.6).outcome == "not held"


def test_bad_input():
    with pytest.raises(ValueError, match="values"):
        stats.interval([1.0, float("nan")])
    with pytest.raises(ValueError, match="above, below"):
        stats.verdict("x", stats.interval([1.0, 2.0]))
