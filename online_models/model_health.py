"""Prequential (test-then-train) health of the models, for dashboards and alerts.

Each propensity label is scored with the prediction made when its snapshot was taken,
before the model learned from it: a rolling ROC AUC and log-loss over the last labels,
and ADWIN watching the log-loss for drift. The tier flap ratio is the share of recent
tier changes that undo the same user's previous change (A -> B -> A).

The rolling AUC and ADWIN are River's, used through the compiled cores that
`river.metrics.RollingROCAUC` and `river.drift.ADWIN` wrap: importing those two packages
imports River's datasets, metrics and with them scikit-learn, pandas and most of SciPy,
about 100 MB of every instance's resident memory for two small objects
(docs/performance.md, "What the service imports"). `tests/unit/test_model_health.py`
checks the figures against River's public classes.

>>> h = ModelHealth(window=100)
>>> h.observe([(0.9, True), (0.2, False), (0.7, True), (0.4, False)], [])
>>> h.auc, round(h.log_loss, 4)
(1.0, 0.299)
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from typing import Any, Final

from river._river_rust.drift import AdaptiveWindowing
from river._river_rust.stats import RsRollingROCAUC

from online_models.tier_change import TierChange

#: Users whose last change is remembered for the flap ratio.
FLAP_MEMORY: Final = 100_000
_EPS: Final = 1e-15


def _adwin() -> AdaptiveWindowing:
    """A new ADWIN window with `river.drift.ADWIN`'s defaults."""
    return AdaptiveWindowing(
        delta=0.002, clock=32, max_buckets=5, min_window_length=5, grace_period=10
    )


class ModelHealth:
    """Rolling model-quality measures of one instance."""

    def __init__(self, window: int = 5000) -> None:
        self._auc = RsRollingROCAUC(1, window)
        self._losses: deque[float] = deque(maxlen=window)
        self._loss_sum = 0.0
        self._adwin = _adwin()
        self.drifts = 0
        self.labels = 0
        self._last: OrderedDict[str, str | None] = OrderedDict()
        self._changes: deque[bool] = deque(maxlen=window)

    def observe(self, resolved: Iterable[Sequence[Any]], changes: Iterable[TierChange]) -> None:
        """Fold in the labels resolved (predicted, label, ...) and the tier changes made by
        one batch."""
        labels: list[int] = []
        scores: list[float] = []
        for p, y, *_ in resolved:
            self.labels += 1
            labels.append(int(y))
            scores.append(p)
            q = min(max(p, _EPS), 1 - _EPS)
            loss = -math.log(q if y else 1 - q)
            if len(self._losses) == self._losses.maxlen:
                self._loss_sum -= self._losses[0]
            self._losses.append(loss)
            self._loss_sum += loss
            if self._adwin.update(loss):  # a drift: ADWIN starts a new window, as River's
                self.drifts += 1
                self._adwin = _adwin()
        if labels:
            self._auc.update_many(labels, scores)
        for c in changes:
            if c.tier is None:  # erased: nothing of the user is kept, here either
                self._last.pop(c.user_id, None)
                continue
            if c.previous_tier is None:
                continue
            before = self._last.pop(c.user_id, None)
            self._changes.append(before is not None and before == c.tier)
            self._last[c.user_id] = c.previous_tier
            if len(self._last) > FLAP_MEMORY:
                self._last.popitem(last=False)

    @property
    def auc(self) -> float | None:
        """Rolling ROC AUC, or None before both classes were seen."""
        return float(self._auc.get()) if self.labels else None

    @property
    def log_loss(self) -> float | None:
        """Rolling mean log-loss, or None before any label."""
        return self._loss_sum / len(self._losses) if self._losses else None

    @property
    def flaps(self) -> float:
        """Share of recent tier changes that undid the user's previous one."""
        return sum(self._changes) / len(self._changes) if self._changes else 0.0
