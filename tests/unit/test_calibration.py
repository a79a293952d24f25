"""The propensity's calibration map follows a buying rate that moved, from resolved labels
only, and never changes how users rank."""

from __future__ import annotations

import numpy as np

from online_models.global_model import GlobalModel
from online_models.merge import MergePolicy
from online_models.online import OnlineModels

NAMES = ("signal", "noise")


def _stream(models: OnlineModels, rng: np.random.Generator, shift: float, n: int) -> None:
    for _ in range(n):
        x = [float(rng.normal()), float(rng.normal())]
        p = 1.0 / (1.0 + np.exp(-(1.5 * x[0] - 1.0 - shift)))
        models.learn_sample(x)
        models.learn_label(x, {0: float(rng.random() < p)}, 0.5)


def test_the_map_follows_a_falling_rate_the_head_remembers() -> None:
    rng = np.random.default_rng(5)
    models = OnlineModels(
        GlobalModel.initial(NAMES), MergePolicy(every_samples=400, min_init_samples=400)
    )
    _stream(models, rng, 0.0, 20_000)  # a long history at one rate...
    _stream(models, rng, 1.5, 3_000)  # ...then buyers become rarer
    model = models.model
    assert model.calibration is not None
    z = rng.normal(size=(20_000, 2))
    truth = 1.0 / (1.0 + np.exp(-(1.5 * z[:, 0] - 2.5)))
    raw = model.replace(calibration=None)
    x = [list(map(float, row)) for row in z]
    calibrated = np.array([model.score(v).propensity for v in x])
    uncalibrated = np.array([raw.score(v).propensity for v in x])
    # the head, remembering the long history, over-predicts; the map corrects most of it
    assert uncalibrated.mean() - truth.mean() > 0.03
    assert abs(calibrated.mean() - truth.mean()) < 0.5 * (uncalibrated.mean() - truth.mean())
    # monotone: the users rank exactly as the head ranks them
    assert (np.argsort(calibrated, kind="stable") == np.argsort(uncalibrated, kind="stable")).all()


def test_the_map_survives_the_model_file() -> None:
    rng = np.random.default_rng(6)
    models = OnlineModels(
        GlobalModel.initial(NAMES), MergePolicy(every_samples=400, min_init_samples=400)
    )
    _stream(models, rng, 0.0, 2_000)
    model = models.model
    assert model.calibration is not None and model.calibration.weights != (1.0,)
    assert GlobalModel.from_json(model.to_json()) == model


def test_labels_that_all_look_alike_never_stop_the_map() -> None:
    """Every label of a version scored alike (one logit: a stream whose users all look the
    same, e.g. first page views and no purchase) for 700 versions. Once the prior
    is forgotten the map's Newton system is singular (after about 600 versions), which
    raised LinAlgError and stopped the service at every restart; the map now moves only
    along what the labels determine."""
    from online_models import calibration

    for logit, n in (
        (-2.9043065014283656, 102),
        (-7.867778915771767, 54),
        (-0.5276518723500025, 97),
        (-7.731315397556285, 1),
        (-1.4731715670277428, 134),
    ):
        c = calibration.initial()
        for _ in range(700):
            c = calibration.update(c, np.full(n, logit), np.zeros(n))
        values = [*c.weights, c.intercept, *c.precision]
        assert np.isfinite(values).all(), (logit, n, c)
        p = 1.0 / (1.0 + np.exp(-calibration.apply(c, np.array([logit]))))
        assert np.isfinite(p).all() and p[0] < 0.01  # it learnt that nobody buys
