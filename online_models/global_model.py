"""The one model the whole consumer group scores with: scaler statistics, segment
centroids, segment profiles and the prediction heads (:mod:`online_models.glm`: the
propensities, churn risk and expected purchases), versioned, stored as plain JSON.

Scoring is our own code (nearest centroid, dot product), never River's ``predict_one``:
River's ``KMeans.predict_one`` inserts random coordinates for unseen features, mutating the
model, and two processes would drift apart. A frozen :class:`GlobalModel` gives the same
answer everywhere.

The version name carries a digest of the content, so two instances that report the same
``name`` scored with identical models.

>>> m = GlobalModel.initial(("a", "b"))
>>> m.has_segments, [h.name for h in m.heads], round(m.score([0.0, 0.0]).propensity, 2)
(False, ['purchase_30d'], 0.15)
>>> m = m.replace(version=1, n=10.0, mean=(1.0, 2.0), var=(4.0, 1.0),
...               heads=(Head("purchase_30d", "logistic", (0.5, 0.0), 0.0, (1.0,) * 9),))
>>> s = m.score([3.0, 2.0])             # z = (1, 0)
>>> s.segment, round(s.propensity, 4), [round(p, 4) for p in s.predictions]
(None, 0.6225, [0.6225])
>>> GlobalModel.from_json(m.to_json()) == m
True

Segments live in the space of the customer's traits (:mod:`online_models.segment_traits`):
a vector of the service's features is assigned to the nearest centroid of its traits.

>>> from online_models.feature_vector import FEATURE_NAMES
>>> t = GlobalModel.initial(FEATURE_NAMES).replace(
...     centroids=((0.0, 0.0, 0.0), (2.0, 2.0, 4.0)), centroid_counts=(5.0, 5.0))
>>> x = [0.0] * len(FEATURE_NAMES)
>>> t.score(x).segment, round(t.score(x).distance, 3)
(0, 0.0)
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import orjson

from online_models.calibration import slope_offset
from online_models.glm import Head
from online_models.segment_traits import TRAIT_NAMES, SegmentTraits

#: v2: prediction heads with their precision, segment profiles and silhouette; v3: the
#: propensity's calibration map and 29 features (BG/NBD's closed forms); v4: segment
#: centroids in the space of the traits (:mod:`online_models.segment_traits`), no longer of
#: the standardised features. An older model (v1: 15 features, v2: 26, v3: centroids of
#: the features) is refused: fit or learn a new one.
SCHEMA: Final = "tierstream.model.v4"
#: The heads of a model nobody configured: the 30-day purchase propensity.
DEFAULT_HEADS: Final = (("purchase_30d", "logistic", 0.15),)
#: Variance below this is treated as no variance: the feature is centred, not scaled.
MIN_VAR: Final = 1e-12


@dataclass(frozen=True, slots=True)
class ModelScore:
    """What the model says about one feature vector."""

    segment: int | None
    distance: float | None
    propensity: float
    #: Per-feature contributions to the propensity logit, ``w_j * z_j``.
    logit_terms: tuple[float, ...]
    #: Every head's prediction, in the model's head order (the first is ``propensity``).
    predictions: tuple[float, ...] = ()


@dataclass(frozen=True)
class GlobalModel:
    """A frozen model version. The heads' weights live in the standardised space of this
    version's scaler, the centroids in the space of the traits (:data:`TRAIT_NAMES`);
    centroid index = segment id, ordered on the value axis when the segments were
    created."""

    version: int
    feature_names: tuple[str, ...]
    n: float
    mean: tuple[float, ...]
    var: tuple[float, ...]
    centroids: tuple[tuple[float, ...], ...]
    centroid_counts: tuple[float, ...]
    heads: tuple[Head, ...]
    labels_seen: int = 0
    samples_seen: int = 0
    #: The mean silhouette of the segments when their number was last chosen (None:
    #: never evaluated).
    silhouette: float | None = None
    #: Per segment: its size share, generated label and centroid in raw units.
    profiles: tuple[dict[str, Any], ...] = ()
    #: A uniform sample of the users' snapshot vectors (raw), on which k is chosen and
    #: the profiles are computed, and how many vectors it was drawn from.
    reservoir: tuple[tuple[float, ...], ...] = ()
    reservoir_seen: int = 0
    #: The propensity's calibration map (:mod:`online_models.calibration`), applied to
    #: the first head's logit; None: the identity.
    calibration: Head | None = None
    #: The event time (ms) of the history this model was fitted on, up to which it has
    #: learnt everything (``tierstream model fit``): a deployment reading that history
    #: again does not learn it a second time. None: a model learnt online.
    fitted_until_ms: int | None = None

    @classmethod
    def initial(
        cls,
        feature_names: tuple[str, ...],
        heads: tuple[tuple[str, str, float], ...] = DEFAULT_HEADS,
    ) -> GlobalModel:
        """Version 0: no statistics, no segments; each head ``(name, kind, prior)``
        predicts its prior for everyone."""
        d = len(feature_names)
        return cls(
            0,
            tuple(feature_names),
            0.0,
            (0.0,) * d,
            (1.0,) * d,
            (),
            (),
            tuple(Head.initial(name, kind, d, prior=prior) for name, kind, prior in heads),
        )

    @property
    def weights(self) -> tuple[float, ...]:
        """The first head's (the propensity's) weights."""
        return self.heads[0].weights

    @property
    def intercept(self) -> float:
        """The first head's intercept."""
        return self.heads[0].intercept

    def head_index(self, name: str) -> int | None:
        """The position of head ``name``, or None."""
        for i, head in enumerate(self.heads):
            if head.name == name:
                return i
        return None

    def replace(self, **changes: Any) -> GlobalModel:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)

    @property
    def has_segments(self) -> bool:
        """True once centroids exist."""
        return bool(self.centroids)

    @functools.cached_property
    def scale(self) -> tuple[float, ...]:
        """Standard deviations, 1.0 where a feature has no variance yet."""
        return tuple(math.sqrt(v) if v > MIN_VAR else 1.0 for v in self.var)

    @functools.cached_property
    def traits(self) -> SegmentTraits:
        """Reads the segments' traits from this model's feature vectors (a model of other
        features, as in a test, has none, and so no segments)."""
        return SegmentTraits(self.feature_names)

    @functools.cached_property
    def name(self) -> str:
        """``v<version>-<digest>``: unique per content (computed once: a version is
        frozen)."""
        return f"v{self.version}-{self.digest()}"

    def digest(self) -> str:
        """First 8 hex digits of the SHA-256 of the canonical JSON."""
        body = orjson.dumps(self._body(), option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(body).hexdigest()[:8]

    def standardize(self, x: list[float]) -> list[float]:
        """``(x - mean) / std``."""
        return [(xi - m) / s for xi, m, s in zip(x, self.mean, self.scale, strict=True)]

    @functools.cached_property
    def _arrays(
        self,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        c = np.array(self.centroids, dtype=float).reshape(len(self.centroids), len(TRAIT_NAMES))
        w = np.array([h.weights for h in self.heads])
        b = np.array([h.intercept for h in self.heads])
        if self.calibration is not None:  # folded into the first head: one expression
            slope, offset = slope_offset(self.calibration)
            w[0] *= slope
            b[0] = slope * b[0] + offset
        logistic = np.array([h.kind == "logistic" for h in self.heads])
        return np.array(self.mean), 1.0 / np.array(self.scale), w, b, logistic, c

    @functools.cached_property
    def _logistic(self) -> tuple[bool, ...]:
        return tuple(h.kind == "logistic" for h in self.heads)

    def predict_heads(self, z: np.ndarray) -> np.ndarray:
        """Every head's prediction for standardised rows ``z`` (one column per head)."""
        _, _, w, b, logistic, _ = self._arrays
        eta = np.clip(z @ w.T + b, -30.0, 30.0)
        out: np.ndarray = np.where(logistic, 1.0 / (1.0 + np.exp(-eta)), np.exp(eta))
        return out

    def score(self, x: list[float]) -> ModelScore:
        """Segment, distance and the heads' predictions for one raw feature vector: the
        same numbers as its row in :meth:`score_rows`."""
        return self.score_rows([x]).model_score(0)

    def score_rows(self, rows: Sequence[Sequence[float]] | np.ndarray) -> ScoredRows:
        """Score raw feature vectors together (a batch's events and timers)."""
        return ScoredRows(self, rows)

    def score_many(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Vectorised :meth:`score` over rows of ``x``: (segments, distances, propensities).

        Segments and distances are -1 and NaN while there are no centroids.
        """
        scored = self.score_rows(x)
        propensity = np.array([scored.predictions(i)[0] for i in range(len(x))])
        if not self.centroids:
            return np.full(len(x), -1), np.full(len(x), np.nan), propensity
        return np.array(scored.segments), np.array(scored.distances), propensity

    def _body(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "version": self.version,
            "feature_names": list(self.feature_names),
            "scaler": {"n": self.n, "mean": list(self.mean), "var": list(self.var)},
            "segments": {
                "traits": list(TRAIT_NAMES),
                "centroids": [list(c) for c in self.centroids],
                "counts": list(self.centroid_counts),
            },
            "heads": [h.to_json() for h in self.heads],
            "labels_seen": self.labels_seen,
            "samples_seen": self.samples_seen,
            "silhouette": self.silhouette,
            "profiles": list(self.profiles),
            "reservoir": {
                "seen": self.reservoir_seen,
                "vectors": [list(v) for v in self.reservoir],
            },
            "calibration": None if self.calibration is None else self.calibration.to_json(),
            # Only when set, so a model learnt online keeps its content and its name.
            **({} if self.fitted_until_ms is None else {"fitted_until_ms": self.fitted_until_ms}),
        }

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (no pickles: anyone who can write the store must not run code)."""
        return {**self._body(), "name": self.name}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GlobalModel:
        """Inverse of :meth:`to_json`; raises ValueError on a model of another schema or
        one whose content does not match its name."""
        if data.get("schema") != SCHEMA:
            raise ValueError(f"not a {SCHEMA} model (schema {data.get('schema')!r})")
        try:
            model = cls(
                version=int(data["version"]),
                feature_names=tuple(data["feature_names"]),
                n=float(data["scaler"]["n"]),
                mean=tuple(map(float, data["scaler"]["mean"])),
                var=tuple(map(float, data["scaler"]["var"])),
                centroids=tuple(tuple(map(float, c)) for c in data["segments"]["centroids"]),
                centroid_counts=tuple(map(float, data["segments"]["counts"])),
                heads=tuple(Head.from_json(h) for h in data["heads"]),
                labels_seen=int(data.get("labels_seen", 0)),
                samples_seen=int(data.get("samples_seen", 0)),
                silhouette=None if data.get("silhouette") is None else float(data["silhouette"]),
                profiles=tuple(dict(p) for p in data.get("profiles", ())),
                reservoir=tuple(
                    tuple(map(float, v)) for v in data.get("reservoir", {}).get("vectors", ())
                ),
                reservoir_seen=int(data.get("reservoir", {}).get("seen", 0)),
                calibration=None
                if data.get("calibration") is None
                else Head.from_json(data["calibration"]),
                fitted_until_ms=None
                if data.get("fitted_until_ms") is None
                else int(data["fitted_until_ms"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed model: missing or bad {exc}") from None
        d = len(model.feature_names)
        vectors = (model.mean, model.var, *(h.weights for h in model.heads))
        if not model.heads or any(len(v) != d for v in vectors):
            raise ValueError("malformed model: vector lengths differ from feature_names")
        traits = data["segments"].get("traits", list(TRAIT_NAMES))
        if traits != list(TRAIT_NAMES) or any(len(c) != len(TRAIT_NAMES) for c in model.centroids):
            raise ValueError(f"malformed model: centroids are not of the traits {TRAIT_NAMES}")
        if model.centroids and not model.traits.available:
            raise ValueError("malformed model: segments, but no features to read traits from")
        if "name" in data and data["name"] != model.name:
            raise ValueError(f"model content does not match its name {data['name']!r}")
        return model


class ScoredRows:
    """What one model version says about a block of raw feature vectors, one per row,
    computed together: one array expression per batch instead of one per event.

    Every reduction runs along a row (a product summed over the features), never across
    rows, so a row's numbers do not depend on the other rows: an event scores the same
    whatever batch it came in, and :meth:`GlobalModel.score` (a block of one) agrees.

    >>> m = GlobalModel.initial(("a", "b"))
    >>> rows = m.score_rows([[0.0, 0.0], [3.0, 2.0]])
    >>> [round(rows.predictions(i)[0], 3) for i in range(2)]
    [0.15, 0.15]
    """

    __slots__ = ("_eta", "_logistic", "_model", "_z", "distances", "segments")

    def __init__(self, model: GlobalModel, rows: Sequence[Sequence[float]] | np.ndarray) -> None:
        mean, inv_scale, w, b, _, centroids = model._arrays
        self._model = model
        self._logistic = model._logistic
        x = np.asarray(rows, dtype=float).reshape(len(rows), len(mean))
        z = (x - mean) * inv_scale
        self._z = z
        eta = (z[:, None, :] * w[None, :, :]).sum(axis=2) + b
        self._eta: list[list[float]] = np.clip(eta, -30.0, 30.0).tolist()
        #: Per row, the nearest centroid (None without segments) and its distance.
        self.segments: list[int | None]
        self.distances: list[float | None]
        if model.centroids:
            t = model.traits.of(x)
            d2 = ((t[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
            best = d2.argmin(axis=1)
            self.segments = best.tolist()
            self.distances = np.sqrt(d2[np.arange(len(z)), best]).tolist()
        else:
            self.segments = [None] * len(z)
            self.distances = [None] * len(z)

    def predictions(self, i: int) -> tuple[float, ...]:
        """Every head's prediction for row ``i`` (the first is the propensity)."""
        exp = math.exp
        return tuple(
            [
                (1.0 / (1.0 + exp(-e)) if is_logistic else exp(e))
                for e, is_logistic in zip(self._eta[i], self._logistic, strict=True)
            ]
        )

    def propensity(self, i: int) -> float:
        """The first head's prediction for row ``i``: ``predictions(i)[0]``, alone."""
        e = self._eta[i][0]
        return 1.0 / (1.0 + math.exp(-e)) if self._logistic[0] else math.exp(e)

    def model_score(self, i: int, predictions: tuple[float, ...] | None = None) -> ModelScore:
        """Row ``i`` as a :class:`ModelScore`, with its propensity logit terms."""
        if predictions is None:
            predictions = self.predictions(i)
        w0 = self._model._arrays[2][0]
        logit_terms = tuple((w0 * self._z[i]).tolist())
        return ModelScore(
            self.segments[i], self.distances[i], predictions[0], logit_terms, predictions
        )
