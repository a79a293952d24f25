"""Folds the instances' contributions into the next global model version.

- Scaler: exact pooled mean and variance (Chan et al.'s parallel formula), weighted by
  counts.
- Segments: each centre moves by the count-weighted mean of the instances' moves. Every
  instance started from the same centroids, so centre ``k`` is the same segment everywhere
  and ids stay stable across versions. The first centroids are seeded with k-means++ and
  refined by Lloyd iterations on the traits of the pooled reservoir
  (:mod:`online_models.segment_traits`), with a fixed seed, and numbered along the value
  axis (:data:`VALUE_AXIS`), so a higher segment means a more valuable one. A model whose
  features carry no traits (a test's) has no segments.
- Heads (propensities, churn, expected purchases): every instance's labels since the
  version, pooled, update each head by a Bayesian step (:meth:`Head.update`).
- Heads live in the scaler's standardised space, so they are re-expressed when the
  scaler changes: the same raw vector keeps the same prediction. Centroids live in the
  traits' own units, which no scaler moves.

>>> from online_models.global_model import GlobalModel
>>> from online_models.learners import LocalLearner
>>> from online_models.segment_traits import INPUTS
>>> base = GlobalModel.initial((*INPUTS, *VALUE_AXIS))  # the traits' inputs, the value's
>>> learner = LocalLearner(base)
>>> for i in range(40):
...     learner.learn_sample([5.0, float(i % 2) * 3, float(i % 2) * 4, 6.0, i % 2, i % 2])
>>> policy = MergePolicy(n_segments=2, min_init_samples=20)
>>> learned, pooled = learned_counts(base, [learner.contribution()])
>>> merge_due(base, learned=learned, reservoir=pooled, p=policy)
True
>>> v1 = merge(base, [learner.contribution()], policy)
>>> v1.version, len(v1.centroids), v1.samples_seen, v1.n
(1, 2, 40, 40.0)
>>> v1.score([5.0, 0.0, 0.0, 6.0, 0, 0]).segment, v1.score([5.0, 3.0, 4.0, 6.0, 1, 1]).segment
(0, 1)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from online_models import calibration
from online_models.glm import MAX_ETA, Head
from online_models.global_model import MIN_VAR, GlobalModel
from online_models.learners import settled
from online_models.segment_choice import (
    SWITCH_MARGIN,
    assign,
    choose_k,
    distances,
    kmeans,
    member_means,
    profiles,
    value_order,
)
from online_models.segment_choice import silhouette as silhouette_of
from online_models.segment_traits import SegmentTraits

#: Weights of the features whose mean over a segment's sampled users orders the segments
#: by value (lowest first): the log of BG/NBD's expected purchases in a year and of
#: Gamma-Gamma's weighted order value, so the log of the spend they expect in a year. A
#: customer who bought once, however much, is worth little until they come back: ordered
#: by the traits' own rates, one-off big baskets ranked above regular buyers, whose future
#: spend was 2.5 times theirs (the order export, seed 2024).
VALUE_AXIS: Final[Mapping[str, float]] = {"expected_per_year_log": 1.0, "aov_weighted_log": 1.0}
#: Features that stay in the vector (and the snapshot) but out of every head: their
#: weight is held at 0. ``purchases_log`` (the lifetime count) and
#: ``purchases_365d_log`` are correlated 0.9995 on the clickstream's sample; the heads
#: weighed them +20.8 and -14.3 per raw unit in one deployment and +5.4 and -2.2 in
#: another, a direction the labels hardly determine (``docs/models.md``, the warm start).
HEAD_LEFT_OUT: Final = ("purchases_log",)


@dataclass(frozen=True)
class MergePolicy:
    """When and how versions advance. Counts, never wall-clock time, decide: the same
    events give the same versions."""

    #: A new version once the group learned this many samples since the current one.
    every_samples: int = 2000
    n_segments: int = 5
    #: Samples pooled before the first segments are seeded.
    min_init_samples: int = 1000
    seed: int = 7
    #: The range k is chosen in by the silhouette (equal bounds: k stays ``n_segments``).
    segments_min: int = 2
    segments_max: int = 8
    #: k is evaluated every this many versions.
    choose_every_versions: int = 20
    #: Snapshot vectors kept in the model to choose k on and to profile the segments.
    reservoir_size: int = 500


def merge_due(base: GlobalModel, *, learned: int, reservoir: int, p: MergePolicy) -> bool:
    """True when ``learned`` samples and labels (group-wide, since ``base``) or, before the
    first segments, ``reservoir`` pooled vectors warrant a new version."""
    if seeding(base):
        return reservoir >= p.min_init_samples
    return learned >= p.every_samples


def seeding(base: GlobalModel) -> bool:
    """True while ``base`` has no segments yet and a version must seed them: it then
    waits for ``min_init_samples`` pooled vectors, whatever else was learned."""
    return not base.has_segments and base.traits.available


def learned_counts(base: GlobalModel, contributions: Sequence[dict[str, Any]]) -> tuple[int, int]:
    """(samples + labels, reservoir size) of the contributions made on top of ``base``."""
    mine = [c for c in contributions if c.get("base") == base.name]
    return sum(c["samples"] + c["labels"] for c in mine), sum(len(c["reservoir"]) for c in mine)


def merge(
    base: GlobalModel, contributions: Sequence[dict[str, Any]], p: MergePolicy
) -> GlobalModel:
    """The next version: ``base`` plus every contribution made on top of it (their
    queued samples learnt first)."""
    mine = [settled(base, c) for c in contributions if c.get("base") == base.name]
    n, mean, var = _pooled_scaler(base, mine)
    new_scale = np.array([math.sqrt(v) if v > MIN_VAR else 1.0 for v in var])
    old_mean, old_scale = np.array(base.mean), np.array(base.scale)
    new_mean = np.array(mean)

    if base.has_segments:
        centroids, counts = _moved_centroids(base, mine)
    else:
        pooled = [x for c in mine for x in c["reservoir"]]
        centroids, counts = _seed_segments(pooled, base.traits, base.feature_names, p)
    rows = [r for c in mine for r in c["labelled"]]
    labelled = np.array(rows, dtype=float).reshape(len(rows), len(base.feature_names) + 2)
    reservoir, seen = _sampled(base, labelled[labelled[:, 0] == 0, 2:], p)
    sample = np.array(reservoir).reshape(len(reservoir), len(base.feature_names))
    segments = _segments(base, centroids, counts, sample, p)
    z = (labelled[:, 2:] - new_mean) / new_scale
    calibration = _calibrated(base, labelled)
    held = np.array([name in HEAD_LEFT_OUT for name in base.feature_names], dtype=bool)
    heads = []
    for i, head in enumerate(base.heads):
        moved = head.restandardized(old_mean, old_scale, new_mean, new_scale)
        mask = labelled[:, 0] == i
        heads.append(moved.update(z[mask], labelled[mask, 1], held=held))
    return base.replace(
        version=base.version + 1,
        n=n,
        mean=tuple(float(m) for m in mean),
        var=tuple(float(v) for v in var),
        heads=tuple(heads),
        calibration=calibration,
        reservoir=reservoir,
        reservoir_seen=seen,
        **segments,
        labels_seen=base.labels_seen + sum(c["labels"] for c in mine),
        samples_seen=base.samples_seen + sum(c["samples"] for c in mine),
    )


def _calibrated(base: GlobalModel, labelled: np.ndarray) -> Head:
    """The propensity's calibration map after the first head's new labels, each scored
    by ``base``'s head before it learns them (:mod:`online_models.calibration`)."""
    mine = labelled[labelled[:, 0] == 0]
    head = base.heads[0]
    z = (mine[:, 2:] - np.array(base.mean)) / np.array(base.scale)
    logit = np.clip(z @ np.array(head.weights) + head.intercept, -MAX_ETA, MAX_ETA)
    return calibration.update(base.calibration or calibration.initial(), logit, mine[:, 1])


def _pooled_scaler(
    base: GlobalModel, mine: Sequence[dict[str, Any]]
) -> tuple[float, list[float], list[float]]:
    n, mean, m2 = base.n, list(base.mean), [v * base.n for v in base.var]
    for c in mine:
        s = c["scaler"]
        nb = float(s["n"])
        if not nb:
            continue
        total = n + nb
        for j, (mb, vb) in enumerate(zip(s["mean"], s["var"], strict=True)):
            delta = mb - mean[j]
            mean[j] += delta * nb / total
            m2[j] += vb * nb + delta * delta * n * nb / total
        n = total
    return n, mean, [x / n if n else 1.0 for x in m2]


def _moved_centroids(
    base: GlobalModel, mine: Sequence[dict[str, Any]]
) -> tuple[np.ndarray, np.ndarray]:
    old = np.array(base.centroids)
    moved = np.zeros_like(old)
    weight = np.zeros(len(old))
    for c in mine:
        counts = np.array(c["counts"], dtype=float)
        moved += counts[:, None] * (np.array(c["centers"]) - old)
        weight += counts
    step = np.divide(moved, weight[:, None], out=np.zeros_like(moved), where=weight[:, None] > 0)
    return old + step, np.array(base.centroid_counts) + weight


def _seed_segments(
    pooled: Sequence[Sequence[float]],
    traits: SegmentTraits,
    names: Sequence[str],
    p: MergePolicy,
) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n_segments`` centroids (k-means on the pooled vectors' traits), in
    value order, and how many pooled vectors each holds; none without traits."""
    if not traits.available or not len(pooled):
        return np.zeros((0, 0)), np.zeros(0)
    x = np.array(pooled, dtype=float)
    t = traits.of(x)
    c = kmeans(t, min(p.n_segments, len(t)), p.seed)
    c = c[value_order(member_means(x, assign(t, c), len(c)), _value_axis(names))]
    return c, np.bincount(assign(t, c), minlength=len(c)).astype(float)


def _value_axis(names: Sequence[str]) -> np.ndarray:
    """:data:`VALUE_AXIS` over the features ``names`` (0 for any it does not weigh)."""
    return np.array([VALUE_AXIS.get(n, 0.0) for n in names])


def _sampled(
    base: GlobalModel, vectors: np.ndarray, p: MergePolicy
) -> tuple[tuple[tuple[float, ...], ...], int]:
    """The reservoir after ``vectors`` (Algorithm R, a generator seeded by the version:
    the same contributions give the same sample)."""
    rng = np.random.default_rng([p.seed, base.version])
    kept = list(base.reservoir)
    seen = base.reservoir_seen
    for v in vectors:
        seen += 1
        if len(kept) < p.reservoir_size:
            kept.append(tuple(float(x) for x in v))
        else:
            j = int(rng.integers(seen))
            if j < p.reservoir_size:
                kept[j] = tuple(float(x) for x in v)
    return tuple(kept), seen


def _segments(
    base: GlobalModel,
    centroids: np.ndarray,
    counts: np.ndarray,
    sample: np.ndarray,
    p: MergePolicy,
) -> dict[str, Any]:
    """Centroids, counts, silhouette and profiles of the next version: k is evaluated
    on the traits of the reservoir every ``choose_every_versions`` versions
    (:mod:`online_models.segment_choice`)."""
    silhouette = base.silhouette
    traits = base.traits
    t = traits.of(sample) if traits.available else np.zeros((0, 0))
    due = (base.version + 1) % p.choose_every_versions == 0
    if len(centroids) and len(t) >= 100 and due and p.segments_min < p.segments_max:
        d = distances(t)  # one matrix for every k's silhouette and the current one's
        k, best, found = choose_k(t, range(p.segments_min, p.segments_max + 1), p.seed, d)
        current = silhouette_of(t, assign(t, centroids), d)
        silhouette = current
        if k != len(centroids) and best > current + SWITCH_MARGIN:
            members = member_means(sample, assign(t, found), k)
            centroids = found[value_order(members, _value_axis(base.feature_names))]
            share = np.bincount(assign(t, centroids), minlength=k) / len(t)
            counts = share * counts.sum()
            silhouette = best
    labels = assign(t, centroids) if len(centroids) and len(t) else np.zeros(0, dtype=int)
    names = base.feature_names
    return {
        "centroids": tuple(tuple(float(v) for v in c) for c in centroids),
        "centroid_counts": tuple(float(c) for c in counts),
        "silhouette": silhouette,
        "profiles": tuple(
            profiles(member_means(sample, labels, len(centroids)), sample, names, labels)
        )
        if len(centroids)
        else (),
    }
