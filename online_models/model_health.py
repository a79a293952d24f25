"""Prequential (test-then-train) health of the models, for dashboards and alerts.

Each propensity label is scored with the prediction made when its snapshot was taken,
before the model learned from it: a rolling ROC AUC and log-loss over the last labels,
and ADWIN watching the log-loss for drift. The tier flap ratio is the share of recent
tier changes that undo the same user's previous change (A -> B -> A).

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

from river import drift, metrics

from online_models.tier_change import TierChange

#: Users whose last change is remembered for the flap ratio.
FLAP_MEMORY: Final = 100_000
_EPS: Final = 1e-15


class ModelHealth:
    """Rolling model-quality measures of one instance."""

    def __init__(self, window: int = 5000) -> None:
        self._auc = metrics.RollingROCAUC(window_size=window)
        self._losses: deque[float] = deque(maxlen=window)
        self._loss_sum = 0.0
        self._adwin = drift.ADWIN()
        self.drifts = 0
        self.labels = 0
        self._last: OrderedDict[str, str | None] = OrderedDict()
        self._changes: deque[bool] = deque(maxlen=window)

    def observe(self, resolved: Iterable[Sequence[Any]], changes: Iterable[TierChange]) -> None:
        """Fold in the labels resolved (predicted, label, ...) and the tier changes made by
        one batch."""
        for p, y, *_ in resolved:
            self.labels += 1
            self._auc.update(y, p)
            q = min(max(p, _EPS), 1 - _EPS)
            loss = -math.log(q if y else 1 - q)
            if len(self._losses) == self._losses.maxlen:
                self._loss_sum -= self._losses[0]
            self._losses.append(loss)
            self._loss_sum += loss
            self._adwin.update(loss)
            if self._adwin.drift_detected:
                self.drifts += 1
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
