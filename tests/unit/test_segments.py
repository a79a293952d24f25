"""k is chosen by the silhouette: a stream of three well-separated kinds of users ends
with three segments, each profiled and labelled; ids follow the value axis."""

from __future__ import annotations

import numpy as np

from online_models.feature_vector import FEATURE_NAMES
from online_models.global_model import GlobalModel
from online_models.merge import MergePolicy
from online_models.online import OnlineModels


def test_three_well_separated_kinds_end_with_k_3_and_labelled_profiles() -> None:
    d = len(FEATURE_NAMES)
    rng = np.random.default_rng(3)
    centres = rng.normal(0.0, 1.0, size=(3, d)) * 6.0
    policy = MergePolicy(
        every_samples=400, min_init_samples=400, n_segments=5, choose_every_versions=4
    )
    models = OnlineModels(GlobalModel.initial(FEATURE_NAMES), policy)
    for i in range(8000):
        x = [float(v) for v in centres[i % 3] + rng.normal(0.0, 0.5, d)]
        models.learn_sample(x)
        models.learn_label(x, {0: float(i % 2)}, 0.5)
    model = models.model
    assert len(model.centroids) == 3, model.silhouette
    assert model.silhouette is not None and model.silhouette > 0.8
    assert [p["segment"] for p in model.profiles] == [0, 1, 2]
    assert all(p["label"] and 0.2 < p["share"] < 0.45 for p in model.profiles)
    # the chosen k survives a round trip, as `tierstream model export` writes it
    again = GlobalModel.from_json(model.to_json())
    assert again == model and len(again.to_json()["segments"]["centroids"]) == 3
