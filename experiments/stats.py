"""Intervals over seeds and verdicts computed from them.

A headline number of a study is measured once per seed of the whole pipeline (split,
initialisation, MC draws); :func:`interval` reports the mean with a Student-t confidence
interval, ``mean +- t_{(1+level)/2, n-1} sd / sqrt(n)``. A claim of a source document is a
statement about a quantity (usually a paired difference between two methods on the same seeds);
:func:`verdict` turns the quantity's interval into

- ``"held"``: the whole interval satisfies the claim;
- ``"not held"``: the whole interval contradicts it;
- ``"inconclusive"``: the interval straddles the claim's threshold.

With one seed there is no interval (its bounds are NaN) and every verdict is "inconclusive".
"""

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy import stats as scipy_stats

__all__ = ["Interval", "Verdict", "interval", "paired", "verdict"]

HELD, NOT_HELD, INCONCLUSIVE = "held", "not held", "inconclusive"


class Interval(NamedTuple):
    """Mean of ``n`` per-seed values and the bounds of its confidence interval."""

    mean: float
    low: float
    high: float
    n: int

    def format(self, digits: int = 3) -> str:
        """``mean [low, high]``, e.g. ``0.123 [0.101, 0.145]``."""
        if self.n < 2:
            return f"{self.mean:.{digits}f} (1 seed)"
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"

    def as_dict(self) -> dict:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n}


def interval(values: Sequence[float], *, level: float = 0.95) -> Interval:
    """Mean and Student-t interval of per-seed ``values`` (NaN bounds for a single value)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0 or not np.all(np.isfinite(v)):
        raise ValueError(f"values: expected finite per-seed values, got {v.tolist()}")
    if not 0 < level < 1:
        raise ValueError(f"level: expected a value in (0, 1), got {level}")
    mean = float(np.mean(v))
    if v.size < 2:
        return Interval(mean, float("nan"), float("nan"), 1)
    half = scipy_stats.t.ppf(0.5 + level / 2, v.size - 1) * np.std(v, ddof=1) / np.sqrt(v.size)
    return Interval(mean, float(mean - half), float(mean + half), int(v.size))


def paired(a: Sequence[float], b: Sequence[float], *, level: float = 0.95) -> Interval:
    """Interval of the per-seed differences ``b - a`` (methods evaluated on the same seeds)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(
            f"b: expected the shape of a {a.shape} (one value per seed), got {b.shape}"
        )
    return interval(b - a, level=level)


class Verdict(NamedTuple):
    """A claim, the interval it was judged on and the outcome."""

    claim: str
    outcome: str
    interval: Interval

    def as_dict(self) -> dict:
        return {"claim": self.claim, "outcome": self.outcome, "interval": self.interval.as_dict()}


def verdict(claim: str, value: Interval, *, above: float | None = None, below: float | None = None):
    """Judge ``claim`` ("the quantity is above ``above``" or "below ``below``") on ``value``.

    Exactly one of ``above``/``below`` is given. Held when the whole interval lies on the
    claimed side of the threshold, not held when it lies entirely on the other side (or on the
    threshold), inconclusive otherwise.
    """
    if (above is None) == (below is None):
        raise ValueError("above, below: expected exactly one threshold")
    if value.n < 2:
        return Verdict(claim, INCONCLUSIVE, value)
    if above is not None:
        outcome = HELD if value.low > above else NOT_HELD if value.high <= above else INCONCLUSIVE
    else:
        outcome = HELD if value.high < below else NOT_HELD if value.low >= below else INCONCLUSIVE
    return Verdict(claim, outcome, value)
