"""The value score a user's tier is decided on, with its explanation.

The score is a weighted sum of log-scaled features evaluated at an event time:
``score = sum(w_f * log1p(f))``. Values like spend are heavy-tailed; ``log1p`` keeps one
large order from dominating and keeps zero at zero. Each term is a feature's
contribution, which is what a tier change reports as its reason.

>>> from online_models.event import Event
>>> scorer = ValueScorer({"spend_30d": 1.0, "activity_7d": 0.5})
>>> f = UserFeatures.new()
>>> f.apply(Event("e1", "u", "purchase", 0, 99.0))
>>> s = scorer.score(f, 0)
>>> round(s.value, 4), [c.feature for c in s.contributions]
(4.9517, ['spend_30d', 'activity_7d'])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from online_models.event import ADD_TO_CART_INDEX, PURCHASE_INDEX, REFUND_INDEX
from online_models.features import DAY_MS, DECAY_RATES, UserFeatures

__all__ = ["FEATURES", "Contribution", "Score", "ValueScorer"]

_H1, _H7, _H30, _H365 = 0, 1, 2, 3


#: The decayed sums a score can weigh: name -> (half-life index, the sum at the last
#: event). Evaluated at ``now_ms`` as ``sum * decay_factor(now_ms, h)`` (0 when the sum is).
_DECAYED: Final[Mapping[str, tuple[int, Callable[[UserFeatures], float]]]] = {
    "spend_30d": (_H30, lambda f: f.spend[_H30]),
    "spend_7d": (_H7, lambda f: f.spend[_H7]),
    "spend_365d": (_H365, lambda f: f.spend[_H365]),
    "purchases_365d": (_H365, lambda f: f.counts[_H365][PURCHASE_INDEX]),
    "purchases_30d": (_H30, lambda f: f.counts[_H30][PURCHASE_INDEX]),
    "refunded_30d": (_H30, lambda f: f.refunded[_H30]),
    "refunds_30d": (_H30, lambda f: f.counts[_H30][REFUND_INDEX]),
    "carts_7d": (_H7, lambda f: f.counts[_H7][ADD_TO_CART_INDEX]),
    "activity_1d": (_H1, lambda f: sum(f.counts[_H1])),
    "activity_7d": (_H7, lambda f: sum(f.counts[_H7])),
    "activity_30d": (_H30, lambda f: sum(f.counts[_H30])),
}
#: The features that are not decayed sums, each evaluated at an event time ``now_ms``.
_PLAIN: Final[Mapping[str, Callable[[UserFeatures, int], float]]] = {
    "days_since_last_event": lambda f, now: max(0, now - f.last_ms) / DAY_MS,
    "tenure_days": lambda f, now: max(0, now - f.first_ms) / DAY_MS,
}


def _decayed_feature(
    h: int, raw: Callable[[UserFeatures], float]
) -> Callable[[UserFeatures, int], float]:
    """The feature ``raw`` decayed at half-life ``h`` to an event time."""

    def value(f: UserFeatures, now_ms: int) -> float:
        v = raw(f)
        return v * f.decay_factor(now_ms, h) if v else 0.0

    return value


#: Named features a score can weigh, each evaluated at an event time ``now_ms``.
FEATURES: Final[Mapping[str, Callable[[UserFeatures, int], float]]] = {
    **{name: _decayed_feature(h, raw) for name, (h, raw) in _DECAYED.items()},
    **_PLAIN,
}


#: Model outputs a score can weigh directly (no log1p): the propensity (0..1), the
#: segment's rank on the value axis (0 for the lowest segment, 1 for the highest), the
#: long-horizon propensity and the churn risk (0..1), and ``log1p`` of the expected value
#: over the long horizon (expected purchases x expected order value).
MODEL_TERMS: Final = (
    "propensity",
    "segment_rank",
    "propensity_long",
    "churn_risk",
    "expected_value_log",
)


@dataclass(frozen=True, slots=True)
class Contribution:
    """One feature's part of a score: its value and ``weight * log1p(value)``."""

    feature: str
    value: float
    contribution: float


@dataclass(frozen=True, slots=True)
class Score:
    """A value score and its parts; :attr:`contributions` sorts them only when asked
    (most scores decide nothing and are never explained)."""

    value: float
    parts: tuple[tuple[str, float, float], ...]

    @property
    def contributions(self) -> tuple[Contribution, ...]:
        """Contributions, largest magnitude first."""
        return tuple(Contribution(*part) for part in self.top(None))

    def top(self, k: int | None) -> list[tuple[str, float, float]]:
        """The ``k`` largest parts by magnitude (all of them for None), largest first,
        ties in the weights' order: (feature, value, contribution) as in :attr:`parts`,
        without a :class:`Contribution` made for the parts left out.

        >>> Score(1.0, (("a", 1.0, 0.5), ("b", 2.0, -2.0), ("c", 3.0, 0.5))).top(2)
        [('b', 2.0, -2.0), ('a', 1.0, 0.5)]
        """
        parts = self.parts
        # Largest magnitude first, ties in the weights' order (a stable sort, reversed).
        order = sorted(range(len(parts)), key=[abs(p[2]) for p in parts].__getitem__, reverse=True)
        return [parts[i] for i in order[:k]]


class ValueScorer:
    """Weighted sum of ``log1p`` features; the weights come from the tier config.

    Raises ValueError on an unknown feature name, listing the known ones.
    """

    def __init__(self, weights: Mapping[str, float]) -> None:
        known = (*FEATURES, *MODEL_TERMS)
        unknown = sorted(set(weights) - set(known))
        if unknown:
            raise ValueError(
                f"unknown score feature(s) {', '.join(unknown)}; known: {', '.join(known)}"
            )
        if not weights:
            raise ValueError("the score needs at least one weighted feature")
        self.weights = dict(weights)
        #: (name, half-life index or -1, the undecayed sum or the plain feature, weight).
        self._terms: tuple[tuple[str, int, Callable[..., float], float], ...] = tuple(
            (name, *(_DECAYED[name] if name in _DECAYED else (-1, _PLAIN[name])), float(w))
            for name, w in weights.items()
            if name in FEATURES
        )
        self._model_terms = tuple(
            (name, float(w)) for name, w in weights.items() if name in MODEL_TERMS
        )
        #: Whether the weighted model terms are at most the propensity and the segment's
        #: rank (:meth:`value_with` then gives the score without the other heads).
        self.needs_only_propensity = all(
            name in ("propensity", "segment_rank") for name, _ in self._model_terms
        )

    def score(
        self, features: UserFeatures, now_ms: int, model: Mapping[str, float] | None = None
    ) -> Score:
        """The score of ``features`` as of event time ``now_ms``; ``model`` holds the
        values of :data:`MODEL_TERMS` (a missing one counts as 0)."""
        total, parts = self.feature_parts(features, now_ms)
        return self.with_model(total, parts, model)

    def feature_parts(
        self, features: UserFeatures, now_ms: int
    ) -> tuple[float, tuple[tuple[str, float, float], ...]]:
        """The features' part of the score at ``now_ms``: its sum and its terms. Taken
        when the event is applied; the models' part is added once the batch is scored
        (:meth:`with_model`)."""
        parts = []
        total = 0.0
        log1p = math.log1p
        dt = max(0, now_ms - features.last_ms)
        factors: list[float | None] = [None] * len(DECAY_RATES)  # each computed once
        for name, h, fn, weight in self._terms:
            if h < 0:
                value = fn(features, now_ms)
            else:
                value = fn(features)
                if value:
                    k = factors[h]
                    if k is None:
                        k = factors[h] = math.exp(DECAY_RATES[h] * dt)
                    value *= k
                else:
                    value = 0.0
            c = weight * log1p(value)
            total += c
            parts.append((name, value, c))
        return total, tuple(parts)

    def value(self, total: float, model: Mapping[str, float]) -> float:
        """The score's value from the features' part ``total`` and the models' outputs:
        :meth:`with_model` without the terms, summed in the same order (the same number)."""
        for name, weight in self._model_terms:
            total += weight * model.get(name, 0.0)
        return total

    def value_with(self, total: float, propensity: float, segment_rank: float) -> float:
        """:meth:`value` when :attr:`needs_only_propensity`: the same sum, in the same
        order, of the two terms it weighs (a decision that changes no tier needs no other
        head's prediction).

        >>> s = ValueScorer({"spend_30d": 1.0, "propensity": 6.0, "segment_rank": 0.5})
        >>> s.value_with(1.25, 0.4, 0.5) == s.value(1.25, {"propensity": 0.4, "segment_rank": 0.5})
        True
        """
        for name, weight in self._model_terms:
            total += weight * (propensity if name == "propensity" else segment_rank)
        return total

    def with_model(
        self,
        total: float,
        parts: tuple[tuple[str, float, float], ...],
        model: Mapping[str, float] | None,
    ) -> Score:
        """The score from the features' part and the models' outputs."""
        terms = list(parts)
        for name, weight in self._model_terms:
            value = model.get(name, 0.0) if model else 0.0
            c = weight * value
            total += c
            terms.append((name, value, c))
        return Score(total, tuple(terms))
