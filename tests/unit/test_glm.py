"""The prediction heads' updates (online_models/glm.py) beyond their doctests."""

from __future__ import annotations

import numpy as np
import pytest

from online_models.glm import MAX_VERSION_STEP, Head

D = 29


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_spend_head_learning_from_few_heavy_tailed_labels_stays_sane(seed: int) -> None:
    """A spend head (log link) whose first labels come one to a few a version, amounts
    spread over orders of magnitude, after versions without labels have forgotten most of
    its prior: every version's predictions for a population of other users stay within
    e^20. Before each version's move was bounded, one label could send the intercept and
    the weights along a direction it hardly determines, predicting e^26 to e^143 for
    users unlike it (on a real order export, versions later, the weights reached 1e16)."""
    rng = np.random.default_rng(seed)
    head = Head.initial("spend", "poisson", D, prior=20.0)
    for _ in range(30):
        head = head.update(np.zeros((0, D)), np.zeros(0))
    population = rng.normal(size=(2000, D))
    worst = 0.0
    for version in range(120):
        n = [1, 3, 2, 1, 15, 24][version] if version < 6 else 60
        z = rng.normal(size=(n, D))
        y = np.where(rng.random(n) < 0.6, np.exp(rng.normal(6, 1.5, n)), 0.0)
        before = head
        head = head.update(z, y)
        moved = np.abs(head.theta() - before.theta()).max()
        assert moved <= MAX_VERSION_STEP + 1e-9
        worst = max(
            worst, float(np.abs(population @ np.array(head.weights) + head.intercept).max())
        )
    assert worst < 20, f"a prediction of e^{worst:.0f}"


def test_a_version_with_many_labels_still_fits_them() -> None:
    """The bound only paces a head: enough labels of one process bring it to that
    process's weights over a few versions."""
    rng = np.random.default_rng(5)
    head = Head.initial("count", "poisson", 3, prior=0.5)
    truth = np.array([0.8, -0.5, 0.0])
    for _ in range(10):
        z = rng.normal(size=(4000, 3))
        y = rng.poisson(np.exp(z @ truth + 1.0)).astype(float)
        head = head.update(z, y)
    assert np.allclose(head.weights, truth, atol=0.05)
    assert abs(head.intercept - 1.0) < 0.05
