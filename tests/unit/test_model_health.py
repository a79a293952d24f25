"""The model-health figures are River's, and the service does not import what it does not use."""

from __future__ import annotations

import math
import random
import subprocess
import sys

from river import drift, metrics

from online_models.model_health import ModelHealth


def _labels(n: int, seed: int) -> list[tuple[float, bool]]:
    """Predictions that are good for the first half and wrong after it (a drift)."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        y = rnd.random() < 0.3
        p = min(max(rnd.gauss(0.6 if y else 0.25, 0.15), 0.001), 0.999)
        out.append((1.0 - p if i > n // 2 else p, y))
    return out


def test_the_rolling_auc_and_the_drifts_are_rivers() -> None:
    labels = _labels(6000, seed=3)
    health = ModelHealth(window=500)
    auc = metrics.RollingROCAUC(window_size=500)
    adwin = drift.ADWIN()
    drifts = 0
    rnd = random.Random(4)
    i = 0
    while i < len(labels):  # batches of any size, as the service's
        batch = labels[i : i + rnd.randint(0, 40)]
        i += len(batch)
        health.observe([(p, y, "user") for p, y in batch], [])
        for p, y in batch:
            auc.update(y, p)
            q = min(max(p, 1e-15), 1 - 1e-15)
            adwin.update(-math.log(q if y else 1 - q))
            drifts += adwin.drift_detected
        assert health.auc == (float(auc.get()) if health.labels else None)
    assert health.labels == 6000
    assert drifts >= 1  # the stream has a drift, and the test would see a missed one
    assert health.drifts == drifts
    assert health.auc is not None and health.auc < 0.2


def test_the_service_imports_neither_scikit_learn_nor_pandas() -> None:
    """`river.drift` and `river.metrics` import River's datasets, scikit-learn and pandas:
    about 100 MB of every instance's resident memory, for nothing the service uses."""
    code = (
        "import sys, consumer.cli, consumer.commands.run, consumer.service.loop;"
        "print(' '.join(m for m in ('sklearn', 'pandas', 'river.drift', 'river.metrics')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == []
