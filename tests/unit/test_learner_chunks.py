"""Learning samples in chunks (:mod:`online_models.learners`): the segments move exactly
as one sample at a time, the feature statistics are River's ``StandardScaler``'s to the
rounding, and a chunk not yet full is carried by the contribution into the merge."""

from __future__ import annotations

import math
import random

import pytest
from river.preprocessing import StandardScaler

from online_models.feature_vector import FEATURE_NAMES
from online_models.global_model import GlobalModel
from online_models.learners import CHUNK, MIN_STEP, LocalLearner, settled
from online_models.merge import MergePolicy, merge
from online_models.online import OnlineModels


def _vectors(n: int, seed: int) -> list[list[float]]:
    """Raw vectors whose trait inputs spread over kinds of customers."""
    rng = random.Random(seed)
    return [
        [math.log1p(rng.expovariate(1 / (1 + i % 7))) for i in range(len(FEATURE_NAMES))]
        for _ in range(n)
    ]


@pytest.fixture(scope="module")
def base() -> GlobalModel:
    """A version with segments (seeded from a first learner's reservoir)."""
    v0 = GlobalModel.initial(FEATURE_NAMES)
    first = LocalLearner(v0)
    for x in _vectors(120, seed=1):
        first.learn_sample(x)
    v1 = merge(v0, [first.contribution()], MergePolicy(n_segments=3, min_init_samples=100))
    assert len(v1.centroids) == 3
    return v1


def test_chunks_learn_what_one_sample_at_a_time_learns(base: GlobalModel) -> None:
    xs = _vectors(5 * CHUNK + 17, seed=2)
    learner = LocalLearner(base)
    for x in xs:
        learner.learn_sample(x)
    learner.settle()
    # The segments: River's KMeans update, one sample at a time (the code before chunks).
    centers = [list(c) for c in base.centroids]
    counts = [0.0] * len(centers)
    for x in xs:
        z = base.traits.one(x)
        d = [sum((c - v) ** 2 for c, v in zip(center, z, strict=True)) for center in centers]
        k = d.index(min(d))
        step = max(1.0 / (base.centroid_counts[k] + counts[k] + 1.0), MIN_STEP)
        centers[k] = [c + step * (v - c) for c, v in zip(centers[k], z, strict=True)]
        counts[k] += 1.0
    got = learner.contribution()
    assert got["centers"] == centers  # to the bit
    assert got["counts"] == counts
    # The feature statistics: River's StandardScaler, to the rounding.
    scaler = StandardScaler()
    for x in xs:
        scaler.learn_one(dict(zip(FEATURE_NAMES, x, strict=True)))
    assert got["scaler"]["n"] == len(xs)
    for i, name in enumerate(FEATURE_NAMES):
        assert got["scaler"]["mean"][i] == pytest.approx(scaler.means[name], rel=1e-12)
        assert got["scaler"]["var"][i] == pytest.approx(scaler.vars[name], rel=1e-10, abs=1e-15)


def test_a_chunk_not_yet_full_is_carried_into_the_merge(base: GlobalModel) -> None:
    learner = LocalLearner(base)
    xs = _vectors(CHUNK + 5, seed=3)
    for x in xs:
        learner.learn_sample(x)
    c = learner.contribution()
    assert len(c["queued"]) == 5 and c["samples"] == CHUNK + 5
    assert LocalLearner.restore(base, c).contribution() == c  # a restart keeps the chunk
    done = settled(base, c)
    assert done["queued"] == [] and done["scaler"]["n"] == CHUNK + 5
    policy = MergePolicy(n_segments=3)
    assert merge(base, [c], policy) == merge(base, [done], policy)
    assert merge(base, [c], policy).n == base.n + CHUNK + 5


def test_a_version_made_from_the_learner_itself_is_the_one_made_from_its_contribution(
    base: GlobalModel,
) -> None:
    # OnlineModels settles its learner in place and hands its lists over to the merge
    # (no copies of thousands of labelled rows): the version must be the one the merge
    # makes of a copied contribution, whose queued chunk it settles itself.
    xs = _vectors(CHUNK + 4, seed=4)
    policy = MergePolicy(n_segments=3, every_samples=2 * len(xs) + 1)  # at the last sample
    models = OnlineModels(base, policy)
    for i, x in enumerate(xs):
        models.learn_sample(x)
        models.learn_label(x, {0: float(i % 2)})  # labels count toward the version too
    before = models.contribution()
    # no version yet, a chunk not yet full, labels kept
    assert models.model is base and before["queued"] and before["labelled"]
    models.learn_sample(xs[0])  # the count reaches every_samples: a version
    assert models.model.version == base.version + 1
    learner = LocalLearner.restore(base, before)
    learner.learn_sample(xs[0])
    assert models.model == merge(base, [learner.contribution()], policy)
    assert before == LocalLearner.restore(base, before).contribution()  # left as it was
