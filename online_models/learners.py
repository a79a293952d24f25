"""What one instance learns between two global model versions, with River.

Each instance starts from the current :class:`~online_models.global_model.GlobalModel`
and learns locally: feature statistics (Welford's running mean and variance, the
arithmetic of River's ``StandardScaler`` on a list instead of a dict per sample) and
River's ``KMeans`` (segments, on the customer's traits:
:mod:`online_models.segment_traits`); the resolved labels of the prediction heads
(propensities, churn, expected purchases) are kept, raw, until the next version fits
them (:mod:`online_models.glm`: a Bayesian update needs the labels together). Its
:meth:`LocalLearner.contribution` is plain JSON that the merge
(:mod:`online_models.merge`) folds into the next version, and from which
:meth:`LocalLearner.restore` rebuilds the learner exactly after a restart.

Samples are learnt in chunks of :data:`CHUNK`, counted from the version's start (so the
chunks are the same whatever the batch cut and wherever a batch was saved): a chunk's
feature statistics are merged into the running ones at once (the pooled formula of
Chan et al., as versions merge instances), and its traits are read with one array
expression; k-means then takes its samples one by one, in order, as River's
``learn_one`` would. A chunk not yet full is part of the contribution (``queued``), and
is learnt (:func:`settled`) before a version merges it.

K-means step size: River's ``KMeans`` moves the nearest centre by ``halflife``. We set it
to ``1 / n_k`` before each update (``n_k``: points the centre has absorbed), which makes
each centre the running mean of its points (sequential k-means, MacQueen 1967), floored
at :data:`MIN_STEP` so centres keep following a drifting population.

>>> from online_models.global_model import GlobalModel
>>> base = GlobalModel.initial(("a", "b"))
>>> learner = LocalLearner(base)
>>> learner.learn_sample([1.0, 2.0]); learner.learn_label([1.0, 2.0], {0: 1.0})
>>> c = learner.contribution()
>>> c["samples"], c["labels"], c["reservoir"], c["labelled"], c["queued"]
(1, 1, [[1.0, 2.0]], [[0, 1.0, 1.0, 2.0]], [[1.0, 2.0]])
>>> LocalLearner.restore(base, c).contribution() == c
True
>>> settled(base, c)["scaler"], settled(base, c)["queued"]
({'n': 1, 'mean': [1.0, 2.0], 'var': [0.0, 0.0]}, [])
"""

from __future__ import annotations

import math
from typing import Any, Final

import numpy as np
from river import cluster

from online_models.global_model import GlobalModel
from online_models.segment_traits import TRAIT_NAMES

#: Smallest k-means step: a centre keeps moving at least this much toward new points.
MIN_STEP: Final = 1e-3
#: Vectors kept before the first segments exist, to seed them with k-means++.
RESERVOIR_SIZE: Final = 2000
#: Samples learnt together (see the module docstring).
CHUNK: Final = 64


class _OrderedKMeans(cluster.KMeans):
    """River's KMeans with a nearest-centre search in a fixed feature order.

    River sums the distance over a *set* of feature names; string hashing is randomised
    per process, so the summation order (and, on a near tie, the chosen centre) would
    differ between two runs over the same events. The centre found is then moved as
    River's ``learn_one`` moves it (:meth:`move`), without searching a second time.

    Each centre's dict holds the features in ``names`` order (they are filled in that
    order and never gain a key), so its values are read in that order.

    >>> km = _OrderedKMeans(("a", "b"), 2)
    >>> km.centers[0].update(a=0.0, b=0.0); km.centers[1].update(a=4.0, b=4.0)
    >>> k = km.nearest([3.0, 3.5]); k
    1
    >>> km.move(k, [3.0, 3.5], 0.5); dict(km.centers[1])
    {'a': 3.5, 'b': 3.75}
    """

    def __init__(self, names: tuple[str, ...], n_clusters: int) -> None:
        super().__init__(n_clusters=n_clusters, halflife=MIN_STEP, seed=0)
        self.names = names  # River reads __init__ parameters back as attributes

    def nearest(self, z: list[float]) -> int:
        """The index of the centre nearest ``z`` (features in ``names`` order); the
        first of equally near ones."""
        best, best_d = 0, math.inf
        for i, center in self.centers.items():
            d = 0.0
            for c, zi in zip(center.values(), z, strict=True):
                diff = c - zi
                d += diff * diff
            if d < best_d:
                best, best_d = i, d
        return best

    def move(self, k: int, z: list[float], step: float) -> None:
        """Move centre ``k`` toward ``z`` by ``step``: River's ``learn_one`` update,
        ``c += step * (z - c)`` per feature."""
        center = self.centers[k]
        for name, zi in zip(self.names, z, strict=True):
            c = center[name]
            center[name] = c + step * (zi - c)


class LocalLearner:
    """Local River learners on top of a frozen base model."""

    def __init__(self, base: GlobalModel) -> None:
        self.base = base
        names = base.feature_names
        #: Samples the feature statistics have seen, and their running means and
        #: variances (population), per feature in ``names`` order.
        self.n = 0
        #: Samples counted but not learnt yet (fewer than :data:`CHUNK`).
        self.queued: list[list[float]] = []
        self.means = [0.0] * len(names)
        self.vars = [0.0] * len(names)
        k = len(base.centroids)
        self.kmeans = _OrderedKMeans(TRAIT_NAMES, max(k, 1))
        for i, c in enumerate(base.centroids):
            self.kmeans.centers[i].update(zip(TRAIT_NAMES, c, strict=True))
        self.counts = [0.0] * k
        self.samples = 0
        self.labels = 0
        self.reservoir: list[list[float]] = []
        #: Resolved labels since ``base``: ``[head index, label, *raw vector]``.
        self.labelled: list[list[float]] = []

    def learn_sample(self, x: list[float]) -> None:
        """Count one raw feature vector, learnt with its chunk (:meth:`settle`): feature
        statistics and segments."""
        self.samples += 1
        if not self.counts and len(self.reservoir) < RESERVOIR_SIZE:
            self.reservoir.append(list(x))
        queued = self.queued
        queued.append(x)
        if len(queued) >= CHUNK:
            self.settle()

    def settle(self) -> None:
        """Learn the queued samples: their statistics pooled with the running ones, then
        the segments' moves, one sample at a time in order."""
        if not self.queued:
            return
        x = np.array(self.queued, dtype=float)
        self.queued = []
        n_b = len(x)
        mean_b = x.mean(axis=0)
        var_b = x.var(axis=0)
        if self.n:
            total = self.n + n_b
            mean_a = np.array(self.means)
            delta = mean_b - mean_a
            m2 = np.array(self.vars) * self.n + var_b * n_b + delta * delta * self.n * n_b / total
            self.means = (mean_a + delta * n_b / total).tolist()
            self.vars = (m2 / total).tolist()
            self.n = total
        else:
            self.n, self.means, self.vars = n_b, mean_b.tolist(), var_b.tolist()
        if not self.counts:
            return
        kmeans, counts, base_counts = self.kmeans, self.counts, self.base.centroid_counts
        for z in self.base.traits.of(x).tolist():
            k = kmeans.nearest(z)
            n_k = base_counts[k] + counts[k] + 1.0
            kmeans.move(k, z, max(1.0 / n_k, MIN_STEP))
            counts[k] += 1.0

    def learn_label(self, x: list[float], labels: dict[int, float]) -> None:
        """Keep the resolved labels (head index -> label) of one snapshot's raw vector."""
        for head, y in sorted(labels.items()):
            self.labelled.append([head, float(y), *x])
        self.labels += 1

    def contribution(self, *, copy: bool = True) -> dict[str, Any]:
        """Everything learned since ``base``, as plain JSON; ``copy=False`` hands over
        the learner's own lists (for a caller that drops the learner: a version's merge,
        with thousands of labelled rows)."""
        n = self.n if self.samples else 0
        rows = (lambda xs: [list(x) for x in xs]) if copy else list
        return {
            "base": self.base.name,
            "samples": self.samples,
            "labels": self.labels,
            "scaler": {
                "n": n,
                "mean": list(self.means) if n else [],
                "var": list(self.vars) if n else [],
            },
            "centers": [
                [self.kmeans.centers[i][f] for f in TRAIT_NAMES] for i in range(len(self.counts))
            ],
            "counts": list(self.counts),
            "labelled": rows(self.labelled),  # copied unless handed over: rollback keeps them
            "reservoir": list(self.reservoir),
            "queued": rows(self.queued),
        }

    @classmethod
    def restore(cls, base: GlobalModel, data: dict[str, Any]) -> LocalLearner:
        """The learner that produced ``data``; a fresh one if ``data`` is for another base."""
        learner = cls(base)
        if data.get("base") != base.name:
            return learner
        names = base.feature_names
        scaler = data["scaler"]
        if scaler["n"]:
            learner.n = scaler["n"]
            learner.means = [float(v) for v in scaler["mean"]]
            learner.vars = [float(v) for v in scaler["var"]]
            if not len(learner.means) == len(learner.vars) == len(names):
                raise ValueError("the learner's feature statistics are not of the model's features")
        for i, c in enumerate(data["centers"]):
            learner.kmeans.centers[i].update(zip(TRAIT_NAMES, c, strict=True))
        learner.counts = list(data["counts"])
        learner.labelled = [list(row) for row in data["labelled"]]
        learner.samples = data["samples"]
        learner.labels = data["labels"]
        learner.reservoir = [list(x) for x in data["reservoir"]]
        learner.queued = [list(x) for x in data.get("queued", ())]
        return learner


def settled(base: GlobalModel, contribution: dict[str, Any]) -> dict[str, Any]:
    """``contribution`` (made on top of ``base``) with its queued samples learnt: what
    a version merges."""
    if not contribution.get("queued"):
        return contribution
    learner = LocalLearner.restore(base, contribution)
    learner.settle()
    return learner.contribution()
