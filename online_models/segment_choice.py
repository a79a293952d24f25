"""How many segments, and what each one is: k chosen by the silhouette coefficient on a
sample of users, and a profile in raw units with a generated label per segment.

**Choosing k.** Every :attr:`~online_models.merge.MergePolicy.choose_every_versions`
versions (versions advance with the samples users give in event time, so this is a
cadence in event time), k-means is run for every k of the configured range on the
traits (:mod:`online_models.segment_traits`) of the model's reservoir (a uniform sample
of the users' snapshot vectors), and the mean silhouette of each is computed. The best k
replaces the current one only when its silhouette beats the current k's by
:data:`SWITCH_MARGIN` (stability: two k's of nearly equal quality do not alternate). A
new set of centroids is numbered along the value axis, like the first one, so ids keep
their meaning ("higher is more valuable"); a segment whose value rank does not change
keeps its id.

**Profiles.** Each segment is described in raw units by the mean of its sampled users'
features (purchases and spend over a year, days since the last event, order value) and
labelled: how often its centre buys
(``frequent``: 6 purchases a year or more, ``regular`` 2, ``occasional`` 0.5, ``rare``,
``non-buying``), how it spends against the other segments (``high``, ``mid``,
``low spenders``) and whether it is ``lapsed`` (over 60 days silent) or ``active now``
(under 3): ``frequent high spenders``...

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> blobs = np.vstack([rng.normal(c, 0.3, size=(100, 2)) for c in (-4.0, 0.0, 4.0)])
>>> k, score, centres = choose_k(blobs, range(2, 7), seed=1)
>>> k, round(score, 2), centres.shape
(3, 0.9, (3, 2))
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import numpy as np

#: A new k must beat the current one's silhouette by this much to replace it.
SWITCH_MARGIN: Final = 0.02
LLOYD_ITERATIONS: Final = 25


def kmeans(z: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k-means++ seeding and Lloyd iterations; the centres (k x d)."""
    rng = np.random.default_rng(seed)
    centers = [z[rng.integers(len(z))]]
    for _ in range(1, k):
        d2 = ((z[:, None, :] - np.array(centers)[None]) ** 2).sum(axis=2).min(axis=1)
        total = d2.sum()
        pick = rng.choice(len(z), p=d2 / total) if total > 0 else rng.integers(len(z))
        centers.append(z[pick])
    c = np.array(centers)
    for _ in range(LLOYD_ITERATIONS):
        labels = assign(z, c)
        for j in range(k):
            members = z[labels == j]
            if len(members):
                c[j] = members.mean(axis=0)
    return c


def assign(z: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """The nearest centre of each row."""
    out: np.ndarray = ((z[:, None, :] - centers[None]) ** 2).sum(axis=2).argmin(axis=1)
    return out


def distances(z: np.ndarray) -> np.ndarray:
    """The Euclidean distance between every two rows (n x n): what :func:`silhouette`
    reads, computed once for every labelling of the same rows."""
    out: np.ndarray = np.sqrt(((z[:, None, :] - z[None]) ** 2).sum(axis=2))
    return out


def silhouette(z: np.ndarray, labels: np.ndarray, d: np.ndarray | None = None) -> float:
    """Mean silhouette coefficient (Rousseeuw 1987); 0 when there is one cluster. ``d``:
    the rows' :func:`distances`, if already computed.

    >>> z = np.array([[0.0], [0.1], [5.0], [5.1]])
    >>> round(silhouette(z, np.array([0, 0, 1, 1])), 3)
    0.98
    """
    ks = np.unique(labels)
    if len(ks) < 2:
        return 0.0
    if d is None:
        d = distances(z)
    mean_to = np.stack([d[:, labels == k].mean(axis=1) for k in ks], axis=1)
    own = np.searchsorted(ks, labels)
    sizes = np.array([(labels == k).sum() for k in ks])
    n_own = sizes[own]
    # a point's distance to its own cluster excludes itself
    a = np.where(n_own > 1, mean_to[np.arange(len(z)), own] * n_own / np.maximum(n_own - 1, 1), 0)
    mean_to[np.arange(len(z)), own] = np.inf
    b = mean_to.min(axis=1)
    s = np.where(n_own > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-12), 0.0)
    return float(s.mean())


def choose_k(
    z: np.ndarray, ks: Iterable[int], seed: int, d: np.ndarray | None = None
) -> tuple[int, float, np.ndarray]:
    """The k of ``ks`` whose k-means has the best silhouette: (k, silhouette, centres).
    ``d``: the rows' :func:`distances`, if already computed."""
    best: tuple[int, float, np.ndarray] | None = None
    if d is None:
        d = distances(z)
    for k in ks:
        if k < 2 or k >= len(z):
            continue
        centers = kmeans(z, k, seed)
        score = silhouette(z, assign(z, centers), d)
        if best is None or score > best[1]:
            best = (k, score, centers)
    if best is None:
        raise ValueError("no k of the range fits the sample")
    return best


def value_order(positions: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """The order that numbers segments along the value axis (lowest first), from a
    position per segment (its members' mean features)."""
    out: np.ndarray = np.argsort(positions @ axis, kind="stable")
    return out


def member_means(sample: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Per segment, the mean of its members' rows (a segment without members: the mean
    of the whole sample, with a share of 0 in its profile).

    >>> sample = np.array([[1.0, 0.0], [3.0, 0.0], [8.0, 3.0]])
    >>> member_means(sample, np.array([0, 0, 1]), 3).tolist()
    [[2.0, 0.0], [8.0, 3.0], [4.0, 1.0]]
    """
    overall = sample.mean(axis=0) if len(sample) else np.zeros(sample.shape[1])
    rows = [sample[labels == j].mean(axis=0) if (labels == j).any() else overall for j in range(k)]
    return np.array(rows).reshape(k, sample.shape[1])


#: What a profile reports, in raw units: the feature and how to undo its log scaling.
PROFILE_FEATURES: Final = (
    ("purchases_365d_log", "purchases_per_year"),
    ("spend_365d_log", "spend_per_year"),
    ("aov_log", "order_value"),
    ("days_since_event_log", "days_since_event"),
    ("activity_30d_log", "events_per_month"),
)


def profiles(
    centers_raw: np.ndarray,
    sample_raw: np.ndarray,
    names: Sequence[str],
    labels: np.ndarray,
) -> list[dict[str, Any]]:
    """Each segment's share of the sample, its centre in raw units and a label.

    >>> names = ("purchases_365d_log", "spend_365d_log", "days_since_event_log")
    >>> sample = np.log1p(np.array([[1, 10, 200], [2, 30, 100], [12, 900, 3], [10, 700, 5.0]]))
    >>> centres = np.array([sample[:2].mean(axis=0), sample[2:].mean(axis=0)])
    >>> [p["label"] for p in profiles(centres, sample, names, np.array([0, 0, 1, 1]))]
    ['occasional low spenders, lapsed', 'frequent high spenders']
    """
    index = {n: i for i, n in enumerate(names)}
    out = []
    for j, c in enumerate(centers_raw):
        raw: dict[str, float] = {}
        for feature, unit in PROFILE_FEATURES:
            if feature in index:
                raw[unit] = round(math.expm1(float(c[index[feature]])), 2)
        out.append(
            {
                "segment": j,
                "share": round(float((labels == j).mean()), 4) if len(labels) else 0.0,
                "label": _label(c, centers_raw, index),
                "centre": raw,
            }
        )
    return out


def _label(c: np.ndarray, centres: np.ndarray, index: Mapping[str, int]) -> str:
    """Frequency in plain units (purchases a year at the centre), value relative to the
    other segments (the highest spend is ``high``, the lowest ``low``), recency."""
    words = []
    if "purchases_365d_log" in index:
        per_year = math.expm1(float(c[index["purchases_365d_log"]]))
        for floor, word in ((6.0, "frequent"), (2.0, "regular"), (0.5, "occasional")):
            if per_year >= floor:
                words.append(word)
                break
        else:
            words.append("rare" if per_year >= 0.1 else "non-buying")
    if "spend_365d_log" in index and len(centres) > 1:
        i = index["spend_365d_log"]
        order = np.argsort(np.argsort(centres[:, i], kind="stable"), kind="stable")
        rank = order[int(np.flatnonzero((centres == c).all(axis=1))[0])]
        top = len(centres) - 1
        words.append(
            "high spenders" if rank == top else "low spenders" if rank == 0 else "mid spenders"
        )
    label = " ".join(words) or "users"
    if "days_since_event_log" in index:
        days = math.expm1(float(c[index["days_since_event_log"]]))
        if days > 60:
            label += ", lapsed"
        elif days < 3:
            label += ", active now"
    return label
