"""Applies events and timers to a user's state and decides whether their tier changes.

Per event: update the features, build the feature vector, score it with the frozen model
version (segment, propensity), resolve or take the user's propensity snapshot, learn, and
run the tier policy on the value score. Per timer (the user is silent): the same scoring
as of the timer's event time, so a tier falls by inactivity on time, and a snapshot whose
horizon passed becomes a negative label, even for users who never come back.

Events are applied in the order they were read (per partition offset order), never
re-sorted by event time inside a batch: the features do not care about order (they are
exact for late events), and decisions then depend only on the event sequence, not on how
the stream was cut into poll batches. A replay and the live service give the same tiers.

A user's lifetime ends in event time too: silent for ``expire_after`` (the state
time-to-live, 400 days by default), their last timer says so (:meth:`TierEngine.expires`)
and the caller deletes the state. Ending a user is a decision of the engine, not of a
clock in the store, so it happens at the same point of the stream in a replay and in the
live service, and whatever counts users by tier sees it happen.

>>> from online_models.event import Event
>>> tiers = [{"name": "casual"}, {"name": "vip", "min_score": 4}]
>>> engine = TierEngine(ValueScorer({"spend_30d": 1.0}), TierPolicy.from_config({"tiers": tiers}))
>>> state = UserState.new()
>>> engine.apply(state, Event("e1", "u1", "page_view", 0), emitted_at_ms=5).tier
'casual'
>>> engine.apply(state, Event("e2", "u1", "purchase", 1000, 80.0), emitted_at_ms=6).tier
'vip'
>>> engine.apply(state, Event("e2", "u1", "purchase", 1000, 80.0), emitted_at_ms=7) is DUPLICATE
True
>>> state.seq, state.features.events, state.due_ms > 0
(2, 2, True)
>>> change = engine.fire(state, "u1", 60 * DAY_MS, emitted_at_ms=8)   # silent for 60 days
>>> change.tier, change.reason["kind"], change.scores["propensity"]
('casual', 'inactivity', 0.5)
>>> engine.expires(state, "u1", 60 * DAY_MS), engine.expires(state, "u1", 401 * DAY_MS)
(False, True)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Final

import orjson

from online_models.control_group import ControlGroup
from online_models.event import PURCHASE_INDEX, Event
from online_models.feature_vector import FEATURE_NAMES, vector
from online_models.features import DAY_MS
from online_models.global_model import GlobalModel, ModelScore
from online_models.online import OnlineModels
from online_models.scoring import Score, ValueScorer
from online_models.tier_change import TierChange
from online_models.tier_policy import TierDecision, TierPolicy
from online_models.user_state import UserState

#: How many contributions (value score and propensity logit) a tier change reports.
TOP_CONTRIBUTIONS: Final = 3
#: While the model has seen few labels, the value score trusts its propensity little:
#: ``p' = (n p + k prior) / (n + k)`` with ``n`` labels seen. Without it, version 0's 0.5
#: for everyone lifted every user a tier in the first weeks and dropped them again when
#: the labels came (a wave of changes downstream systems would act on).
PROPENSITY_PRIOR: Final = 0.15
PROPENSITY_PRIOR_LABELS: Final = 2000


class _Duplicate:
    __slots__ = ()

    def __repr__(self) -> str:
        return "DUPLICATE"


#: Returned by :meth:`TierEngine.apply` for an event the user already had.
DUPLICATE: Final = _Duplicate()


@dataclass(frozen=True)
class Horizons:
    """Event-time spans of the models."""

    #: "Purchases within H days": the propensity label's horizon. A snapshot is taken at an
    #: event or a timer when none is pending; a purchase resolves it positive, the horizon
    #: passing in event time negative.
    label_ms: int = 30 * DAY_MS
    #: A user gives one learning sample per this span of event time, active or silent:
    #: the segments learn users as they are at any moment (recency included), which is
    #: what they are asked about, and the very active do not outweigh everyone else.
    learn_every_ms: int = 7 * DAY_MS
    #: A silent user is re-scored (and sampled) this often...
    rescore_every_ms: int = 7 * DAY_MS
    #: ...until silent this long, when every recency feature has saturated.
    max_silence_ms: int = 365 * DAY_MS
    #: A user silent this long ends: their state is deleted, a later event starts a new
    #: lifetime (``TIERSTREAM_STATE_TTL_DAYS``). The default leaves the last re-score's
    #: snapshot (at most ``max_silence`` after the last event) its label horizon first.
    expire_after_ms: int = 400 * DAY_MS

    def __post_init__(self) -> None:
        if self.expire_after_ms <= 0:
            raise ValueError("the state time-to-live must be positive")

    def next_due(self, state: UserState) -> int:
        """When ``state``'s timer fires next: the pending snapshot's label deadline, the
        next periodic re-score while the user has not been silent for ``max_silence``,
        and at the latest the end of the user's lifetime (``expire_after``).

        >>> from online_models.event import Event
        >>> s = UserState.new()
        >>> s.features.apply(Event("e1", "u1", "login", 0))
        >>> h = Horizons()
        >>> h.next_due(s) == h.rescore_every_ms
        True
        >>> s.rescored_ms = 365 * DAY_MS          # the last re-score before max_silence
        >>> h.next_due(s) == h.expire_after_ms
        True
        """
        due = [state.features.last_ms + self.expire_after_ms]
        if state.pending is not None:
            due.append(state.pending[0] + self.label_ms + 1)
        periodic = max(state.features.last_ms, state.rescored_ms) + self.rescore_every_ms
        if periodic <= state.features.last_ms + self.max_silence_ms:
            due.append(periodic)
        return min(due)


class TierEngine:
    """Features + models + value score + tier policy, one event or timer at a time."""

    def __init__(
        self,
        scorer: ValueScorer,
        policy: TierPolicy,
        models: OnlineModels | None = None,
        horizons: Horizons | None = None,
        control: ControlGroup | None = None,
    ) -> None:
        self.scorer = scorer
        self.policy = policy
        #: Who is held out of campaigns (flagged on every change; scoring ignores it).
        self.control = control or ControlGroup()
        self.models = models or OnlineModels(GlobalModel.initial(FEATURE_NAMES))
        self.horizons = horizons or Horizons()
        self.policy_digest = _digest(
            {
                "weights": scorer.weights,
                "tiers": [(t.name, t.min_score) for t in policy.tiers],
                "hysteresis": policy.hysteresis,
                "min_dwell_ms": policy.min_dwell_ms,
                "horizons": [self.horizons.label_ms, self.horizons.rescore_every_ms],
            }
        )[:6]

    @property
    def model_version(self) -> str:
        """The model version tier changes are stamped with: model name + policy digest."""
        return f"{self.models.model.name}.{self.policy_digest}"

    def apply(
        self, state: UserState, event: Event, *, emitted_at_ms: int
    ) -> TierChange | _Duplicate | None:
        """Fold ``event`` into ``state``; return the tier change it causes, if any."""
        if state.seen(event.event_id):
            return DUPLICATE
        state.remember(event.event_id)
        if state.born_ms < 0:
            state.born_ms = event.timestamp_ms  # the first event of this lifetime
        features = state.features
        late = features.events > 0 and event.timestamp_ms < features.last_ms
        features.apply(event)
        now = features.last_ms
        x = vector(features, now)
        ms = self.models.score(x)
        if state.pending is not None:
            t0, x0, p0 = state.pending[:3]
            purchase = event.type_index == PURCHASE_INDEX and t0 < event.timestamp_ms
            if purchase and event.timestamp_ms <= t0 + self.horizons.label_ms:
                self._resolve(state, event.user_id, x0, True, p0)
            elif now > t0 + self.horizons.label_ms:
                self._resolve(state, event.user_id, x0, False, p0)
        snapshot = False
        if not late:
            if state.pending is None:
                state.pending = [now, x, ms.propensity]
                snapshot = True
            if state.learned_ms < 0 or now - state.learned_ms >= self.horizons.learn_every_ms:
                state.learned_ms = now
                self.models.learn_sample(x)
        change = self._decide(
            state, event.user_id, now, ms, event.timestamp_ms, emitted_at_ms, "threshold"
        )
        if snapshot and state.pending is not None:
            state.pending.append(state.tier)  # the tier a campaign saw: conversion per tier
        self._arm(state)
        return change

    def fire(
        self, state: UserState, user_id: str, now_ms: int, *, emitted_at_ms: int
    ) -> TierChange | None:
        """The user's timer at event time ``now_ms``: resolve an expired snapshot as a
        negative label and re-score the silent user."""
        if state.pending is not None:
            t0, x0, p0 = state.pending[:3]
            if now_ms > t0 + self.horizons.label_ms:
                self._resolve(state, user_id, x0, False, p0)
        state.rescored_ms = now_ms
        x = vector(state.features, now_ms)
        ms = self.models.score(x)
        # Past ``max_silence`` the user is gone: no new snapshot, no sample, so the only
        # timer left is the end of their lifetime (a snapshot would arm a deadline, whose
        # firing would take the next one, for ever: one event dated in the year 9999 once
        # fired 1.9 M of them for 20 users).
        present = now_ms - state.features.last_ms < self.horizons.max_silence_ms
        snapshot = state.pending is None and present
        if snapshot:
            # Snapshots at events alone would all have "days since last event" = 0, and
            # the model would extrapolate wildly for the silent; "will they buy within H
            # days" is as much a question about the silent.
            state.pending = [now_ms, x, ms.propensity]
        if present and now_ms - state.learned_ms >= self.horizons.learn_every_ms:
            state.learned_ms = now_ms
            self.models.learn_sample(x)
        change = self._decide(state, user_id, now_ms, ms, now_ms, emitted_at_ms, "inactivity")
        if snapshot and state.pending is not None:
            state.pending.append(state.tier)
        self._arm(state)
        return change

    def expires(self, state: UserState, user_id: str, now_ms: int) -> bool:
        """Whether the user's timer at event time ``now_ms`` ends their lifetime: silent
        for ``expire_after``. If so, a propensity snapshot whose horizon has passed
        resolves as a negative label first, as its own timer would have done; one whose
        horizon has not (a time-to-live shorter than the horizon) is dropped, unknown.
        The caller deletes the state."""
        if now_ms - state.features.last_ms < self.horizons.expire_after_ms:
            return False
        if state.pending is not None:
            t0, x0, p0 = state.pending[:3]
            if now_ms > t0 + self.horizons.label_ms:
                self._resolve(state, user_id, x0, False, p0)
            state.pending = None
        state.due_ms = -1
        return True

    def explain(self, state: UserState, now_ms: int | None = None) -> dict[str, Any]:
        """Where the user stands as of event time ``now_ms`` (default: their last event):
        tier, scores, the contributions, and the tier the score alone would give.

        >>> from online_models.event import Event
        >>> tiers = [{"name": "low"}, {"name": "high", "min_score": 1}]
        >>> engine = TierEngine(ValueScorer({"spend_30d": 1.0}),
        ...                     TierPolicy.from_config({"tiers": tiers}))
        >>> s = UserState.new()
        >>> _ = engine.apply(s, Event("e1", "u1", "purchase", 0, 5.0), emitted_at_ms=0)
        >>> e = engine.explain(s)
        >>> e["tier"], round(e["scores"]["value_score"], 3), e["contributions"][0]["feature"]
        ('high', 1.792, 'spend_30d')
        """
        features = state.features
        now = max(features.last_ms, features.last_ms if now_ms is None else now_ms)
        ms = self.models.score(vector(features, now))
        score = self._value(state, now, ms)
        return {
            "tier": state.tier,
            "seq": state.seq,
            "tier_since_ms": state.tier_since_ms,
            "as_of_ms": now,
            "scores": self._scores(score, ms),
            "score_tier": self.policy.tiers[self.policy.raw_tier(score.value)].name,
            "contributions": [
                _contribution(c.feature, c.value, c.contribution) for c in score.contributions
            ],
            "propensity_terms": self._logit_terms(ms, None),
            "model_version": self.model_version,
            "features": features.to_json(),
        }

    def _resolve(
        self, state: UserState, user_id: str, x0: list[float], label: bool, p0: float
    ) -> None:
        pending = state.pending or []
        # The tier at the snapshot (states saved before it was kept: the tier now).
        tier = pending[3] if len(pending) > 3 else state.tier
        state.pending = None
        self.models.learn_label(x0, label, p0, tier=tier, control=self.control.holds(user_id))

    def _value(self, state: UserState, now: int, ms: ModelScore) -> Score:
        model = self.models.model
        k = len(model.centroids)
        rank = ms.segment / (k - 1) if ms.segment is not None and k > 1 else 0.0
        n = model.labels_seen
        p = (n * ms.propensity + PROPENSITY_PRIOR_LABELS * PROPENSITY_PRIOR) / (
            n + PROPENSITY_PRIOR_LABELS
        )
        return self.scorer.score(state.features, now, {"propensity": p, "segment_rank": rank})

    def _decide(
        self,
        state: UserState,
        user_id: str,
        now: int,
        ms: ModelScore,
        event_time_ms: int,
        emitted_at_ms: int,
        kind: str,
    ) -> TierChange | None:
        score = self._value(state, now, ms)
        decision = self.policy.decide(
            state.tier, score.value, since_ms=state.tier_since_ms, now_ms=now
        )
        if decision is None:
            return None
        return self._change(
            state, user_id, decision, score, ms, now, event_time_ms, emitted_at_ms, kind
        )

    def _change(
        self,
        state: UserState,
        user_id: str,
        decision: TierDecision,
        score: Score,
        ms: ModelScore,
        now: int,
        event_time_ms: int,
        emitted_at_ms: int,
        kind: str,
    ) -> TierChange:
        previous = state.tier
        state.tier = decision.tier
        state.seq += 1
        state.tier_since_ms = now
        top = [
            _contribution(c.feature, c.value, c.contribution)
            for c in score.contributions[:TOP_CONTRIBUTIONS]
        ]
        if kind == "inactivity" and decision.direction == "up":
            kind = "rescore"  # a move the dwell time held back, applied on the timer
        tier = self.policy.tier(decision.tier)
        return TierChange(
            user_id=user_id,
            previous_tier=previous,
            tier=decision.tier,
            tier_rank=tier.rank,
            previous_tier_rank=self._rank(previous),
            tier_label=tier.label,
            tier_attributes=dict(tier.attributes),
            control=self.control.holds(user_id),
            seq=state.seq,
            event_time_ms=event_time_ms,
            emitted_at_ms=emitted_at_ms,
            scores=self._scores(score, ms),
            reason={
                "kind": "first_tier" if previous is None else kind,
                "threshold": decision.threshold,
                "direction": decision.direction,
                "contributions": top,
                "propensity_terms": self._logit_terms(ms, TOP_CONTRIBUTIONS),
                "nearest_segment": ms.segment,
            },
            model_version=self.model_version,
            lifetime_ms=state.born_ms,
        )

    def _rank(self, tier: str | None) -> int | None:
        """The rank of ``tier``; None for no tier, or one the config no longer has."""
        try:
            return None if tier is None else self.policy.rank(tier)
        except KeyError:
            return None

    def _scores(self, score: Score, ms: ModelScore) -> dict[str, float | None]:
        return {
            "value_score": score.value,
            "propensity": ms.propensity,
            "segment": ms.segment,
            "segment_distance": ms.distance,
        }

    def _logit_terms(self, ms: ModelScore, top: int | None) -> list[dict[str, float | str]]:
        names = self.models.model.feature_names
        terms = sorted(zip(names, ms.logit_terms, strict=True), key=lambda t: -abs(t[1]))
        return [{"feature": n, "contribution": c} for n, c in terms[:top] if c]

    def _arm(self, state: UserState) -> None:
        """Set when this user's timer fires next (:meth:`Horizons.next_due`)."""
        state.due_ms = self.horizons.next_due(state)


def _contribution(feature: str, value: float, contribution: float) -> dict[str, Any]:
    return {"feature": feature, "value": value, "contribution": contribution}


def _digest(obj: Any) -> str:
    return hashlib.sha256(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)).hexdigest()[:12]
