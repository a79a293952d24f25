"""What segments are made of: three slowly moving traits of a customer, read from the
feature vector.

A segment is meant as a trait of the customer ("frequent high spenders"), not as the
moment the customer is in. The feature vector holds both: the 1-, 7- and 30-day
windows and the recencies that the prediction heads need swing with every visit and
every silent week, so a rare visitor just after a visit and after a silent month are far
apart in it, and k-means on it finds those moments rather than the kinds of customer.
The segments therefore see three rates, each per unit of the customer's own exposure:

- ``events_per_week_log``: events a week (any type);
- ``purchases_per_year_log``: purchases a year;
- ``order_value_log``: the lifetime average order value (``aov_log``, as the vector has it).

A rate is the one-year decayed sum (``activity_365d``, ``purchases_365d``) over the
exposure it was summed over: the days since the user's first event, weighted by the same
decay, ``(365 / ln 2) (1 - 2^(-tenure / 365))``, plus :data:`PRIOR_DAYS`. The prior is
the Gamma-Poisson posterior mean with a month of exposure and nothing seen (shape 0): a
user seen for a day has rates near 0 (nothing is known yet), one seen for a year has
their own; without it one order on a customer's first day reads as dozens a year. A
silent month moves the rates of a customer of a year by a tenth (the sum decays by 6%,
the exposure grows by 5%), where it halves a 30-day window. All three go through
``log1p``, so a distance of 1 means about a factor e in any of them: no scaler, the same
units in every version.

>>> from online_models.feature_vector import FEATURE_NAMES
>>> traits = SegmentTraits(FEATURE_NAMES)
>>> x = [0.0] * len(FEATURE_NAMES)
>>> x[FEATURE_NAMES.index("tenure_days_log")] = math.log1p(335.0)   # a year, less a month
>>> x[FEATURE_NAMES.index("activity_365d_log")] = math.log1p(100.0)
>>> x[FEATURE_NAMES.index("purchases_365d_log")] = math.log1p(4.0)
>>> x[FEATURE_NAMES.index("aov_log")] = math.log1p(50.0)
>>> [round(math.expm1(t), 2) for t in traits.of([x])[0]]     # a week, a year, an order
[2.52, 5.25, 50.0]
>>> SegmentTraits(("a", "b")).available
False
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

import numpy as np

from online_models.features import HALF_LIVES_DAYS

__all__ = ["INPUTS", "PRIOR_DAYS", "TRAIT_NAMES", "SegmentTraits"]

TRAIT_NAMES: Final = ("events_per_week_log", "purchases_per_year_log", "order_value_log")
#: The features the traits are read from.
INPUTS: Final = ("activity_365d_log", "purchases_365d_log", "aov_log", "tenure_days_log")
#: Exposure a rate starts from (days of nothing seen): see the module docstring.
PRIOR_DAYS: Final = 30.0
_YEAR: Final = HALF_LIVES_DAYS[-1]


class SegmentTraits:
    """Reads the traits from raw feature vectors of the features ``names``."""

    def __init__(self, names: Sequence[str]) -> None:
        self.available = all(n in names for n in INPUTS)
        self._at = [list(names).index(n) for n in INPUTS] if self.available else []
        self._width = len(names)

    def of(self, rows: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
        """The traits of raw feature vectors, one row each (n x 3)."""
        x = np.asarray(rows, dtype=float).reshape(len(rows), self._width)
        activity, purchases, aov, tenure = (x[:, i] for i in self._at)
        days = np.maximum(np.expm1(tenure), 0.0)
        exposure = _YEAR / math.log(2.0) * (1.0 - np.exp2(-days / _YEAR)) + PRIOR_DAYS
        per_week = np.maximum(np.expm1(activity), 0.0) * 7.0 / exposure
        per_year = np.maximum(np.expm1(purchases), 0.0) * 365.0 / exposure
        out: np.ndarray = np.column_stack([np.log1p(per_week), np.log1p(per_year), aov])
        return out

    def one(self, x: Sequence[float]) -> list[float]:
        """:meth:`of` of one raw vector (a learning sample's), with less of numpy's
        per-call overhead: about 4 against 24 microseconds a row. The same floats
        (tests/unit/test_segments.py): the arithmetic is IEEE either way, and the
        exponentials and logarithms are numpy's, which on a CPU with AVX-512 are numpy's
        own SIMD code and differ from the C library's in the last bit.

        >>> t = SegmentTraits(INPUTS)
        >>> t.one([0.0, 0.0, 3.0, 0.0]) == t.of([[0.0, 0.0, 3.0, 0.0]])[0].tolist()
        True
        """
        a, b, c, d = self._at
        with np.errstate(all="ignore"):
            days, activity, purchases = np.expm1(np.array((x[d], x[a], x[b]), dtype=float)).tolist()
            days = _positive(days)
            decayed = np.exp2(np.array((-days / _YEAR,))).item()
            exposure = _YEAR / math.log(2.0) * (1.0 - decayed) + PRIOR_DAYS
            per_week = _positive(activity) * 7.0 / exposure
            per_year = _positive(purchases) * 365.0 / exposure
            rates: list[float] = np.log1p(np.array((per_week, per_year))).tolist()
        return [*rates, float(x[c])]


def _positive(v: float) -> float:
    """``np.maximum(v, 0.0)`` of one float: NaN stays NaN, -0.0 becomes 0.0."""
    return v if v > 0.0 or v != v else 0.0
