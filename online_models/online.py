"""The models of one instance during a run: the frozen global version it scores with,
the local learners, and when versions advance.

A version advances the moment the group's learned-sample count since the current version
reaches the merge policy's threshold, counted event by event. The moment therefore does
not depend on how the stream was cut into batches, nor on the wall clock: one instance
reading the same events builds the same versions and gives the same tiers.

>>> from online_models.feature_vector import FEATURE_NAMES
>>> from online_models.merge import MergePolicy
>>> m = OnlineModels(GlobalModel.initial(FEATURE_NAMES), MergePolicy(min_init_samples=3,
...                  n_segments=2))
>>> for i in range(3):
...     m.learn_sample([float(i)] * len(FEATURE_NAMES))
>>> m.model.version, m.model.has_segments, m.advanced
(1, True, True)

A model fitted on history up to an event time (``tierstream model fit``) has learnt it:
what is observed at or before that time is not learnt again, what comes after is.

>>> m = OnlineModels(GlobalModel.initial(FEATURE_NAMES).replace(fitted_until_ms=100),
...                  MergePolicy(min_init_samples=3, n_segments=2))
>>> for t in (50, 100, 100):
...     m.learn_sample([float(t)] * len(FEATURE_NAMES), at_ms=t)
>>> m.model.version, m.learner.samples
(0, 0)
>>> for t in (101, 102, 103):
...     m.learn_sample([float(t)] * len(FEATURE_NAMES), at_ms=t)
>>> m.model.version, m.model.fitted_until_ms
(1, 100)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from online_models.global_model import GlobalModel, ModelScore
from online_models.learners import LocalLearner
from online_models.merge import MergePolicy, learned_counts, merge, merge_due, seeding

#: One learnt observation, as :meth:`OnlineModels.relearn` takes it again: the raw vector,
#: its resolved labels (head index -> label; None for a learning sample) and its event time.
Learnt = tuple[list[float], dict[int, float] | None, int | None]


class Resolved(NamedTuple):
    """A propensity label resolved: did the user buy within the horizon after the snapshot?
    With the snapshot's score, the tier the user was in and their control-group flag, it
    is one observation of the model's quality and of the tier's conversion."""

    predicted: float
    label: bool
    tier: str | None = None
    control: bool = False


class OnlineModels:
    """Scoring with the frozen version, learning locally, advancing versions by counts.

    Attributes:
        model: the version scores come from.
        learner: what this instance learned on top of ``model``.
        others: the other instances' contributions, as loaded with the batch.
        advanced: True once ``model`` changed since :meth:`take_advanced` was called.
        resolved: the :class:`Resolved` labels since :meth:`take_resolved`.
        journal: what was learnt since :meth:`rollback_point`, in order (None before
            the first point: nothing is kept), for :meth:`relearn`.
    """

    def __init__(
        self,
        model: GlobalModel,
        policy: MergePolicy | None = None,
        *,
        frozen: bool = False,
        contribution: dict[str, Any] | None = None,
    ) -> None:
        self.policy = policy or MergePolicy()
        self.frozen = frozen
        self.model = model
        self.learner = self._new_learner(model, contribution)
        self.others: list[dict[str, Any]] = []
        self._others_learned = 0
        self._others_reservoir = 0
        self.advanced = False
        self.resolved: list[Resolved] = []
        self.journal: list[Learnt] | None = None

    def adopt(self, model: GlobalModel, others: Sequence[dict[str, Any]]) -> None:
        """Take the group's current version and the others' contributions (batch start)."""
        self.others = [c for c in others if c.get("base") == model.name]
        self._others_learned, self._others_reservoir = learned_counts(model, self.others)
        if model.name != self.model.name:
            self.model = model
            self.learner = self._new_learner(model)

    def score(self, x: list[float]) -> ModelScore:
        """Score a raw feature vector with the frozen version."""
        return self.model.score(x)

    def learns_at(self, at_ms: int | None) -> bool:
        """Whether what is observed at event time ``at_ms`` is learnt: not by a frozen
        instance, nor when the model was fitted on history up to ``at_ms`` or later (it
        learnt it then; None: a time not known, learnt)."""
        if self.frozen:
            return False
        until = self.model.fitted_until_ms
        return until is None or at_ms is None or at_ms > until

    def learn_sample(self, x: list[float], *, at_ms: int | None = None) -> None:
        """Learn segments and feature statistics from ``x``, observed at event time
        ``at_ms`` (:meth:`learns_at`)."""
        if self.learns_at(at_ms):
            self._learn(x, None, at_ms)

    def learn_label(
        self,
        x: list[float],
        labels: dict[int, float],
        predicted: float | None = None,
        *,
        tier: str | None = None,
        control: bool = False,
        at_ms: int | None = None,
    ) -> None:
        """Learn the resolved labels (head index -> label) of one snapshot of raw vector
        ``x``, resolved at event time ``at_ms`` (:meth:`learns_at`). When the first head
        (the propensity) is among them, ``predicted`` was its score at the snapshot,
        ``tier`` the user's tier then, ``control`` whether the user is held out: one
        observation of the model's quality and the tier's conversion (recorded even
        when the labels are not learnt)."""
        if 0 in labels and predicted is not None:
            self.resolved.append(Resolved(predicted, bool(labels[0]), tier, control))
        if self.learns_at(at_ms):
            self._learn(x, labels, at_ms)

    def _learn(self, x: list[float], labels: dict[int, float] | None, at_ms: int | None) -> None:
        """One observation into the learner (a sample, or a snapshot's ``labels``), kept
        in the :attr:`journal`; a version advances if one is due."""
        if labels is None:
            self.learner.learn_sample(x)
        else:
            self.learner.learn_label(x, labels)
        if self.journal is not None:
            self.journal.append((x, labels, at_ms))
        self._maybe_advance()

    def contribution(self) -> dict[str, Any]:
        """This instance's learning since the current version."""
        return self.learner.contribution()

    def rollback_point(self) -> tuple[GlobalModel, dict[str, Any], list[dict[str, Any]]]:
        """What :meth:`rollback` restores: taken before a batch that may be dropped. The
        :attr:`journal` starts here."""
        self.journal = []
        return self.model, self.learner.contribution(), self.others

    def relearn(self, journal: Sequence[Learnt]) -> None:
        """Learn ``journal`` (what a batch learnt, from :attr:`journal`) again on top of
        the current version: the batch's learning met a version another instance wrote
        meanwhile, and is rebased on it instead of dropped. The same calls in the same
        order as the first time, the labels' quality observations apart (recorded then);
        versions advance as they come due.

        >>> from online_models.feature_vector import FEATURE_NAMES
        >>> from online_models.merge import MergePolicy
        >>> m = OnlineModels(GlobalModel.initial(FEATURE_NAMES), MergePolicy(min_init_samples=3,
        ...                  n_segments=2))
        >>> point = m.rollback_point()
        >>> m.learn_sample([1.0] * len(FEATURE_NAMES)); m.learn_sample([2.0] * len(FEATURE_NAMES))
        >>> journal = m.journal
        >>> m.rollback(point); m.learner.samples
        0
        >>> m.relearn(journal); m.learner.samples, m.journal == journal
        (2, True)
        """
        for x, labels, at_ms in journal:
            if self.learns_at(at_ms):
                self._learn(x, labels, at_ms)

    def rollback(self, point: tuple[GlobalModel, dict[str, Any], list[dict[str, Any]]]) -> None:
        """Forget everything learned since ``point`` (the batch was not saved); the
        :attr:`journal` starts again from there."""
        model, contribution, others = point
        self.journal = []
        self.model = model
        self.learner = self._new_learner(model, contribution)
        self.others = others
        self._others_learned, self._others_reservoir = learned_counts(model, others)
        self.advanced = False
        self.resolved = []

    def take_resolved(self) -> list[Resolved]:
        """The labels resolved since the last call."""
        out, self.resolved = self.resolved, []
        return out

    def take_advanced(self) -> bool:
        """Whether the version advanced since the last call."""
        out, self.advanced = self.advanced, False
        return out

    def _new_learner(
        self, model: GlobalModel, contribution: dict[str, Any] | None = None
    ) -> LocalLearner:
        if contribution:
            return LocalLearner.restore(model, contribution)
        return LocalLearner(model)

    def close_version(self) -> bool:
        """Make a version now of what was learnt since the current one, without waiting
        for the merge policy's count: the end of a fit, after which nothing would merge
        it. False (nothing done) when nothing was learnt, or too little yet for the
        first segments.

        >>> from online_models.feature_vector import FEATURE_NAMES
        >>> from online_models.merge import MergePolicy
        >>> m = OnlineModels(GlobalModel.initial(FEATURE_NAMES), MergePolicy(min_init_samples=3,
        ...                  n_segments=2, every_samples=100))
        >>> for i in range(4):
        ...     m.learn_sample([float(i)] * len(FEATURE_NAMES))
        >>> m.model.version, m.learner.samples
        (1, 1)
        >>> m.close_version(), m.model.version, m.model.samples_seen, m.learner.samples
        (True, 2, 4, 0)
        >>> m.close_version()
        False
        """
        mine = self.learner
        if self.frozen or not (mine.samples or mine.labels or self._others_learned):
            return False
        pooled = len(mine.reservoir) + self._others_reservoir
        if seeding(self.model) and pooled < self.policy.min_init_samples:
            return False
        self._advance()
        return True

    def _maybe_advance(self) -> None:
        mine = self.learner
        if merge_due(
            self.model,
            learned=mine.samples + mine.labels + self._others_learned,
            reservoir=len(mine.reservoir) + self._others_reservoir,
            p=self.policy,
        ):
            self._advance()

    def _advance(self) -> None:
        # The learner's queued chunk learnt here rather than by the merge's `settled`
        # (the same arithmetic): its contribution then goes over without copies.
        learner = self.learner
        learner.settle()
        contribution = learner.contribution(copy=False)
        self.model = merge(self.model, [contribution, *self.others], self.policy)
        self.learner = self._new_learner(self.model)
        self.others = []
        self._others_learned = self._others_reservoir = 0
        self.advanced = True
