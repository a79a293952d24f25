"""What one instance learns between two global model versions, with River.

Each instance starts from the current :class:`~online_models.global_model.GlobalModel`
and learns locally: River's ``StandardScaler`` (feature statistics) and ``KMeans``
(segments, on the customer's traits: :mod:`online_models.segment_traits`); the resolved
labels of the prediction heads (propensities, churn, expected purchases) are kept, raw,
until the next version fits them (:mod:`online_models.glm`: a Bayesian update needs the
labels together). Its :meth:`LocalLearner.contribution`
is plain JSON that the merge (:mod:`online_models.merge`) folds into the next version,
and from which :meth:`LocalLearner.restore` rebuilds the learner exactly after a restart.

K-means step size: River's ``KMeans`` moves the nearest centre by ``halflife``. We set it
to ``1 / n_k`` before each update (``n_k``: points the centre has absorbed), which makes
each centre the running mean of its points (sequential k-means, MacQueen 1967), floored
at :data:`MIN_STEP` so centres keep following a drifting population.

>>> from online_models.global_model import GlobalModel
>>> base = GlobalModel.initial(("a", "b"))
>>> learner = LocalLearner(base)
>>> learner.learn_sample([1.0, 2.0]); learner.learn_label([1.0, 2.0], {0: 1.0})
>>> c = learner.contribution()
>>> c["samples"], c["labels"], c["reservoir"], c["labelled"]
(1, 1, [[1.0, 2.0]], [[0, 1.0, 1.0, 2.0]])
>>> LocalLearner.restore(base, c).contribution() == c
True
"""

from __future__ import annotations

import collections
import math
from collections.abc import Hashable
from typing import Any, Final

from river import cluster, preprocessing

from online_models.global_model import GlobalModel
from online_models.segment_traits import TRAIT_NAMES

#: Smallest k-means step: a centre keeps moving at least this much toward new points.
MIN_STEP: Final = 1e-3
#: Vectors kept before the first segments exist, to seed them with k-means++.
RESERVOIR_SIZE: Final = 2000


class _OrderedKMeans(cluster.KMeans):
    """River's KMeans with a nearest-centre search in a fixed feature order.

    River sums the distance over a *set* of feature names; string hashing is randomised
    per process, so the summation order (and, on a near tie, the chosen centre) would
    differ between two runs over the same events. Learning stays River's ``learn_one``.
    """

    def __init__(self, names: tuple[str, ...], n_clusters: int) -> None:
        super().__init__(n_clusters=n_clusters, halflife=MIN_STEP, seed=0)
        self.names = names  # River reads __init__ parameters back as attributes

    def predict_one(self, x: dict[Hashable, Any]) -> int:
        best, best_d = 0, math.inf
        for i, center in self.centers.items():
            d = 0.0
            for name in self.names:
                diff = center[name] - x[name]
                d += diff * diff
            if d < best_d:
                best, best_d = i, d
        return best


class LocalLearner:
    """Local River learners on top of a frozen base model."""

    def __init__(self, base: GlobalModel) -> None:
        self.base = base
        names = base.feature_names
        self._names = names
        self.scaler = preprocessing.StandardScaler()
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
        """Learn feature statistics and segments from one raw feature vector."""
        self.scaler.learn_one(dict(zip(self._names, x, strict=True)))
        self.samples += 1
        if not self.counts:
            if len(self.reservoir) < RESERVOIR_SIZE:
                self.reservoir.append(list(x))
            return
        traits = self.base.traits.of([x])[0].tolist()
        z: dict[Hashable, Any] = dict(zip(TRAIT_NAMES, traits, strict=True))
        k = self.kmeans.predict_one(z)  # the centre River's learn_one will move
        n = self.base.centroid_counts[k] + self.counts[k] + 1.0
        self.kmeans.halflife = max(1.0 / n, MIN_STEP)
        self.kmeans.learn_one(z)
        self.counts[k] += 1.0

    def learn_label(self, x: list[float], labels: dict[int, float]) -> None:
        """Keep the resolved labels (head index -> label) of one snapshot's raw vector."""
        for head, y in sorted(labels.items()):
            self.labelled.append([head, float(y), *x])
        self.labels += 1

    def contribution(self) -> dict[str, Any]:
        """Everything learned since ``base``, as plain JSON."""
        names = self._names
        n = self.scaler.counts[names[0]] if self.samples else 0
        return {
            "base": self.base.name,
            "samples": self.samples,
            "labels": self.labels,
            "scaler": {
                "n": n,
                "mean": [self.scaler.means[f] for f in names] if n else [],
                "var": [self.scaler.vars[f] for f in names] if n else [],
            },
            "centers": [
                [self.kmeans.centers[i][f] for f in TRAIT_NAMES] for i in range(len(self.counts))
            ],
            "counts": list(self.counts),
            "labelled": [list(row) for row in self.labelled],  # copies: rollback keeps them
            "reservoir": list(self.reservoir),
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
            learner.scaler.counts = collections.Counter(dict.fromkeys(names, scaler["n"]))
            learner.scaler.means = collections.defaultdict(
                float, zip(names, scaler["mean"], strict=True)
            )
            learner.scaler.vars = collections.defaultdict(
                float, zip(names, scaler["var"], strict=True)
            )
        for i, c in enumerate(data["centers"]):
            learner.kmeans.centers[i].update(zip(TRAIT_NAMES, c, strict=True))
        learner.counts = list(data["counts"])
        learner.labelled = [list(row) for row in data["labelled"]]
        learner.samples = data["samples"]
        learner.labels = data["labels"]
        learner.reservoir = [list(x) for x in data["reservoir"]]
        return learner
