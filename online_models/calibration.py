"""The propensity's calibration map: a logistic map of the head's own logit (Platt
scaling), learned online from resolved labels only.

Why. The propensity head is a Bayesian logistic regression over every label it has seen
(forgetting slowly, :data:`online_models.glm.FORGET`), and a label resolves a horizon after
its snapshot. When the population's buying rate moves (the clickstream's months differ;
the customers of a cohort slow down), the head keeps predicting the older rate: on the
generated clickstream its upper bins said 0.45 where 0.21 bought. The map
``p = sigmoid(slope * logit + offset)`` is fitted on what the head *predicted* for the
labels that resolved since the previous version, before it learned them (a prequential
score, never one of a label it had seen), and it forgets faster (:data:`FORGET`), so it
follows the rate with the least lag the labels allow. It is monotone (the slope is kept
positive), so the propensity ranks users exactly as the head does.

>>> import numpy as np
>>> c = initial()
>>> c.weights, c.intercept                  # the identity at first
((1.0,), 0.0)
>>> rng = np.random.default_rng(1)
>>> logit = rng.normal(-2.0, 1.5, size=20_000)
>>> y = (rng.random(20_000) < 1 / (1 + np.exp(-(0.5 * logit - 0.4)))).astype(float)
>>> for chunk in range(10):                  # the head says twice the log-odds it should
...     c = update(c, logit[chunk::10], y[chunk::10])
>>> round(c.weights[0], 1), round(c.intercept, 1)
(0.5, -0.4)
>>> float(apply(c, np.array([0.0]))[0]) == c.intercept
True
"""

from __future__ import annotations

from typing import Final

import numpy as np

from online_models.glm import Head

__all__ = ["FORGET", "MIN_SLOPE", "apply", "initial", "update"]

#: The map's memory: each version keeps this share of the precision of the older labels
#: (about ten versions' labels). Chosen on the clickstream of tuning seed 7.
FORGET: Final = 0.9
#: The map's prior precision toward the identity, in labels' worth of information.
PRIOR_PRECISION: Final = 10.0
#: The slope never falls below this: the map stays increasing.
MIN_SLOPE: Final = 0.05


def initial() -> Head:
    """The identity map, with a prior toward it."""
    precision = np.eye(2) * PRIOR_PRECISION
    return Head("calibration", "logistic", (1.0,), 0.0, tuple(precision.ravel().tolist()))


def update(map_: Head, logit: np.ndarray, y: np.ndarray) -> Head:
    """The map after labels ``y`` of snapshots the head gave logits ``logit``."""
    return map_.update(np.asarray(logit, dtype=float).reshape(-1, 1), y, forget=FORGET)


def slope_offset(map_: Head) -> tuple[float, float]:
    """The map's slope (at least :data:`MIN_SLOPE`) and offset."""
    return max(map_.weights[0], MIN_SLOPE), map_.intercept


def apply(map_: Head, logit: np.ndarray) -> np.ndarray:
    """The calibrated logits."""
    slope, offset = slope_offset(map_)
    out: np.ndarray = slope * np.asarray(logit, dtype=float) + offset
    return out
