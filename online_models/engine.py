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
('casual', 'inactivity', 0.15)
>>> engine.expires(state, "u1", 60 * DAY_MS), engine.expires(state, "u1", 551 * DAY_MS)
(False, True)
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Final

import orjson

from online_models.control_group import ControlGroup
from online_models.event import PURCHASE_INDEX, Event
from online_models.feature_vector import FEATURE_NAMES, vector
from online_models.features import DAY_MS
from online_models.global_model import GlobalModel, ModelScore, ScoredRows
from online_models.online import OnlineModels, Resolved
from online_models.scoring import Score, ValueScorer
from online_models.tier_change import TierChange
from online_models.tier_policy import TierDecision, TierPolicy
from online_models.user_state import Recomputable, UserState

#: How many contributions (value score and propensity logit) a tier change reports.
TOP_CONTRIBUTIONS: Final = 3
#: Up to this many snapshots per horizon are pending at once, a third of the horizon
#: apart. One at a time, every snapshot of a customer who buys twice a year was taken at
#: a purchase, six months apart: the heads learned from "just bought" and scored
#: everyone else by extrapolation (on the order stream, 0.77 AUC for a purchase within
#: 180 days against 0.83 for a regression fitted on the snapshot itself).
SNAPSHOTS_PER_HORIZON: Final = 3
#: The heads' outputs a tier change and a snapshot carry besides the propensity.
EXTRA_SCORES: Final = ("propensity_long", "churn_risk", "expected_purchases", "expected_value")


class _Duplicate:
    __slots__ = ()

    def __repr__(self) -> str:
        return "DUPLICATE"


#: Returned by :meth:`TierEngine.apply` for an event the user already had.
DUPLICATE: Final = _Duplicate()


@dataclass(frozen=True)
class HeadSpec:
    """One prediction head: what it predicts over which horizon, and its prior."""

    name: str
    #: ``logistic`` (a probability) or ``poisson`` (an expected count).
    kind: str
    #: ``purchase`` (any purchase within the horizon), ``churn`` (no event within it),
    #: ``count`` (how many purchases within it) or ``spend`` (how much is spent in it).
    target: str
    horizon_ms: int
    #: What version 0 predicts for everyone.
    prior: float


@dataclass(frozen=True)
class Horizons:
    """Event-time spans of the models.

    A snapshot (the feature vector and what the heads predicted) is taken per horizon at
    an event or a timer when none is pending for it; at its deadline, in event time, the
    purchases and events since give every head of that horizon its label, also for users
    who never came back.
    """

    #: "Purchases within H days": the (first) propensity's horizon.
    label_ms: int = 30 * DAY_MS
    #: The long horizon: a second propensity, the expected purchases and expected spend.
    long_ms: int = 180 * DAY_MS
    #: Churn risk: "no event within this span".
    churn_ms: int = 30 * DAY_MS
    #: A user gives one learning sample per this span of event time, active or silent:
    #: the segments learn users as they are at any moment (recency included), which is
    #: what they are asked about, and the very active do not outweigh everyone else.
    learn_every_ms: int = 7 * DAY_MS
    #: A silent user is re-scored (and sampled) this often...
    rescore_every_ms: int = 7 * DAY_MS
    #: ...until silent this long, when every recency feature has saturated.
    max_silence_ms: int = 365 * DAY_MS
    #: Once silent this long, a user is re-scored every ``silent_rescore_every_ms``
    #: instead (0: never slower); snapshots and samples of the silent follow the re-scores.
    silent_rescore_after_ms: int = 28 * DAY_MS
    silent_rescore_every_ms: int = 0
    #: A silent user's re-score period is at least this share of their silence so far
    #: (1.0: each re-score doubles the silence; 0: a fixed period).
    rescore_growth: float = 0.0
    #: A snapshot's label is resolved at the first periodic re-score at or after the end
    #: of its window (or at an event) instead of a timer of its own; only a deadline past
    #: the last re-score fires on its own. The label is that of the same window (events
    #: are counted by window), except that an event of the user at the very millisecond
    #: the window ends on a re-score falls outside it; the heads learn it up to one
    #: re-score period later.
    labels_at_rescore: bool = False
    #: A silent user gives a learning sample at most once per this span (0: as the
    #: active, ``learn_every_ms``).
    silent_learn_every_ms: int = 0
    #: Snapshots and learning samples on a fixed event-time grid (every multiple of
    #: ``learn_every_ms`` since the epoch at which the user is present), made when the
    #: user is next touched (an event, a re-score, the end of their lifetime) from the
    #: stored state, instead of at events and timers: the learning data no longer depends
    #: on when timers fire, so the re-score schedule can be sparse. Labels resolve on the
    #: grid too (or at the next touch); no snapshot deadline fires on its own.
    learn_on_grid: bool = False
    #: A user silent this long ends: their state is deleted, a later event starts a new
    #: lifetime (``TIERSTREAM_STATE_TTL_DAYS``). The default leaves the last re-score's
    #: snapshots (at most ``max_silence`` after the last event) their longest horizon
    #: first (365 + 180 days, and a few to spare): a shorter one drops the labels of the
    #: most silent users, and the long-horizon heads would never learn that they stay away.
    expire_after_ms: int = 550 * DAY_MS

    def __post_init__(self) -> None:
        if self.expire_after_ms <= 0:
            raise ValueError("the state time-to-live must be positive")
        if self.rescore_growth < 0:
            raise ValueError("the re-score growth must not be negative")

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
        last = state.features.last_ms
        due = last + self.expire_after_ms
        rescored = max(last, state.rescored_ms)
        periodic = self.next_rescore(last, rescored)
        if self.learn_on_grid:
            # One last re-score at max_silence takes the grid up to it; after it, each
            # snapshot's deadline fires on its own, so that the labels of the silent are
            # learnt when their windows close, not at the end of the lifetime.
            final = last + self.max_silence_ms
            if periodic is None and rescored < final:
                periodic = final
            if periodic is not None:
                return min(due, periodic)
        if periodic is None or not self.labels_at_rescore:
            # each snapshot's deadline (on the re-score grid, a later re-score resolves it)
            for p in state.pending or ():
                deadline = p[1] + p[0] + 1
                if deadline < due:
                    due = deadline
        if periodic is not None and periodic < due:
            due = periodic
        return due

    def next_rescore(self, last_ms: int, rescored_ms: int) -> int | None:
        """The periodic re-score after the one at ``rescored_ms`` of a user whose last
        event was at ``last_ms``; None once they have been silent for ``max_silence``.

        >>> h = Horizons(silent_rescore_every_ms=28 * DAY_MS)   # weekly for 4 weeks...
        >>> [h.next_rescore(0, d * DAY_MS) // DAY_MS for d in (0, 21, 28, 56)]
        [7, 28, 56, 84]
        >>> g = Horizons(rescore_growth=1.0)                    # ...or doubling the silence
        >>> [g.next_rescore(0, d * DAY_MS) // DAY_MS for d in (0, 7, 14, 112)]
        [7, 14, 28, 224]
        >>> g.next_rescore(0, 224 * DAY_MS) is None             # past max_silence
        True
        """
        silence = rescored_ms - last_ms
        period = self.rescore_every_ms
        if self.silent_rescore_every_ms and silence >= self.silent_rescore_after_ms:
            period = max(period, self.silent_rescore_every_ms)
        if self.rescore_growth:
            period = max(period, round(self.rescore_growth * silence))
        due = rescored_ms + period
        return due if due <= last_ms + self.max_silence_ms else None

    def silent_learn_ms(self) -> int:
        """How far apart a silent user's learning samples are, at the least."""
        return self.silent_learn_every_ms or self.learn_every_ms

    def silent_knobs(self) -> dict[str, float]:
        """The settings of the silent users' schedule that differ from the defaults
        (for the policy digest: a default schedule leaves it as it was).

        >>> Horizons().silent_knobs(), Horizons(rescore_growth=0.5).silent_knobs()
        ({}, {'rescore_growth': 0.5})
        """
        default = Horizons()
        knobs = {
            "silent_rescore_after_ms": self.silent_rescore_after_ms,
            "silent_rescore_every_ms": self.silent_rescore_every_ms,
            "rescore_growth": self.rescore_growth,
            "labels_at_rescore": float(self.labels_at_rescore),
            "silent_learn_every_ms": self.silent_learn_every_ms,
            "learn_on_grid": float(self.learn_on_grid),
        }
        return {k: v for k, v in knobs.items() if v != getattr(default, k)}

    def heads(self) -> tuple[HeadSpec, ...]:
        """The heads, the 30-day propensity (``label_ms``) first.

        >>> [h.name for h in Horizons().heads()]
        ['purchase_30d', 'purchase_180d', 'churn_30d', 'purchases_180d', 'spend_180d']
        """
        out = [
            HeadSpec(
                f"purchase_{_days(self.label_ms)}", "logistic", "purchase", self.label_ms, 0.15
            ),
            HeadSpec(f"purchase_{_days(self.long_ms)}", "logistic", "purchase", self.long_ms, 0.4),
            HeadSpec(f"churn_{_days(self.churn_ms)}", "logistic", "churn", self.churn_ms, 0.5),
            HeadSpec(f"purchases_{_days(self.long_ms)}", "poisson", "count", self.long_ms, 0.5),
            # Spend regressed directly (log link): with heavy-tailed baskets it ranked next
            # period's revenue better than expected purchases x a shrunk mean order value.
            HeadSpec(f"spend_{_days(self.long_ms)}", "poisson", "spend", self.long_ms, 20.0),
        ]
        unique = {h.name: h for h in reversed(out)}  # the first of a name wins
        return tuple(h for h in out if unique[h.name] is h)

    def spans(self) -> tuple[int, ...]:
        """The distinct horizons, shortest first: one pending snapshot each."""
        return tuple(sorted({h.horizon_ms for h in self.heads()}))


def _days(ms: int) -> str:
    return f"{ms / DAY_MS:g}d"


def model_heads(horizons: Horizons) -> tuple[tuple[str, str, float], ...]:
    """``(name, kind, prior)`` of each head, for :meth:`GlobalModel.initial`."""
    return tuple((h.name, h.kind, h.prior) for h in horizons.heads())


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
        self.horizons = horizons or Horizons()
        self.head_specs = self.horizons.heads()
        self.models = models or OnlineModels(
            GlobalModel.initial(FEATURE_NAMES, model_heads(self.horizons))
        )
        names = [h.name for h in self.models.model.heads]
        if names != [h.name for h in self.head_specs]:
            raise ValueError(
                f"the model's heads {names} are not the configured horizons' "
                f"{[h.name for h in self.head_specs]}: fit or learn a model for them"
            )
        self._spans = self.horizons.spans()
        self._by_span = {
            span: [(i, h.target) for i, h in enumerate(self.head_specs) if h.horizon_ms == span]
            for span in self._spans
        }
        digested: dict[str, Any] = {
            "weights": scorer.weights,
            "tiers": [(t.name, t.min_score) for t in policy.tiers],
            "hysteresis": policy.hysteresis,
            "min_dwell_ms": policy.min_dwell_ms,
            "horizons": [
                self.horizons.label_ms,
                self.horizons.rescore_every_ms,
                self.horizons.long_ms,
                self.horizons.churn_ms,
            ],
        }
        knobs = self.horizons.silent_knobs()
        if knobs:  # a default schedule keeps the digest it always had
            digested["silent"] = knobs
        self.policy_digest = _digest(digested)[:6]

    @property
    def model_version(self) -> str:
        """The model version tier changes are stamped with: model name + policy digest."""
        return f"{self.models.model.name}.{self.policy_digest}"

    def batch(self) -> EnginePass:
        """A pass over one batch's events and timers, scored together at its end."""
        return EnginePass(self)

    def apply(
        self, state: UserState, event: Event, *, emitted_at_ms: int
    ) -> TierChange | _Duplicate | None:
        """Fold ``event`` into ``state``; return the tier change it causes, if any (a pass
        of one event: :meth:`batch` for many)."""
        run = self.batch()
        decision = run.event(state, event, emitted_at_ms=emitted_at_ms)
        run.finish()
        return decision.change if isinstance(decision, Decision) else decision

    def fire(
        self, state: UserState, user_id: str, now_ms: int, *, emitted_at_ms: int
    ) -> TierChange | None:
        """The user's timer at event time ``now_ms`` (a pass of one timer)."""
        run = self.batch()
        decision = run.fire(state, user_id, now_ms, emitted_at_ms=emitted_at_ms)
        run.finish()
        return decision.change

    def expires(self, state: UserState, user_id: str, now_ms: int) -> bool:
        """Whether the user's timer at event time ``now_ms`` ends their lifetime (a pass
        of one timer; see :meth:`EnginePass.expire`)."""
        run = self.batch()
        ended = run.expire(state, user_id, now_ms) is not None
        run.finish()
        return ended

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
            "scores": self._scores(score, ms, self._model_terms(ms, self.models.model)),
            "score_tier": self.policy.tiers[self.policy.raw_tier(score.value)].name,
            "contributions": _contributions(score.top(None)),
            "propensity_terms": self._logit_terms(ms, None),
            "model_version": self.model_version,
            "features": features.to_json(),
        }

    def _due_spans(self, state: UserState, now: int) -> list[int]:
        """The horizons that take a snapshot at ``now``: those whose newest pending one
        is at least :data:`SNAPSHOTS_PER_HORIZON` times younger than the horizon, or that
        have none."""
        newest: dict[int, int] = {}
        for p in state.pending or ():
            newest[p[0]] = max(newest.get(p[0], p[1]), p[1])
        return [
            span
            for span in self._spans
            if span not in newest or now - newest[span] >= span // SNAPSHOTS_PER_HORIZON
        ]

    def _snapshot(
        self, state: UserState, now: int, x: list[float], spans: list[int]
    ) -> list[list[Any]]:
        """Take a snapshot of ``x`` for each of ``spans`` (:meth:`_due_spans`); the
        snapshots taken. Their propensity (and tier) are filled in once the batch is
        scored (:meth:`EnginePass.finish`)."""
        pending = state.pending or []
        taken = []
        x = Recomputable(x)  # until an event changes the features (fix_snapshots)
        for span in spans:
            snap = [span, now, x, None, 0, 0, None, 0.0]
            pending.append(snap)
            taken.append(snap)
        state.pending = pending
        return taken

    def _count(self, state: UserState, event: Event) -> None:
        """Count ``event`` into every snapshot it falls after."""
        for p in state.pending or ():
            if p[1] < event.timestamp_ms <= p[1] + p[0]:
                p[5] += 1
                if event.type_index == PURCHASE_INDEX:
                    p[4] += 1
                    p[7] += event.amount

    def _resolve_due(
        self,
        state: UserState,
        user_id: str,
        now: int,
        *,
        closing: bool = False,
        learnt_at: int | None = None,
    ) -> list[_Label]:
        """Resolve the snapshots whose horizon passed by event time ``now``: each gives
        the heads of its horizon their labels (learnt now). The first head's labels are
        returned: they become :class:`Resolved` observations once the batch is scored (the
        snapshot's propensity and tier may come from this batch). ``closing``: a timer
        at ``now`` also resolves the windows that end at ``now`` (a horizon that is a
        multiple of the re-score period ends on a re-score; an event of the user at that
        very millisecond comes after the timer and falls outside the window)."""
        pending = state.pending
        if not pending:
            return []
        for p in pending:  # most calls resolve nothing: say so without building lists
            end = p[1] + p[0]
            if now > end or (now == end and closing):
                break
        else:
            return []
        keep = []
        observed: list[_Label] = []
        for p in pending:
            span, t0, _, _, purchases, events, _, spend = p
            if now < t0 + span or (now == t0 + span and not closing):
                keep.append(p)
                continue
            labels = {}
            for i, target in self._by_span.get(span, ()):
                if target == "purchase":
                    labels[i] = 1.0 if purchases else 0.0
                elif target == "churn":
                    labels[i] = 0.0 if events else 1.0
                elif target == "count":
                    labels[i] = float(purchases)
                else:
                    labels[i] = float(spend)
            if labels:
                # Not learnt if a fitted model learnt them in its fit (resolved by its time).
                at = now if learnt_at is None else learnt_at
                # (its vector, or the features' at t0 when the stored state left it out)
                self.models.learn_label(state.snapshot_vector(p), labels, at_ms=at)
                if 0 in labels:
                    observed.append((p, bool(labels[0]), self.control.holds(user_id)))
        state.pending = keep or None
        return observed

    def _model_terms(self, ms: ModelScore, model: GlobalModel) -> dict[str, float]:
        """What the heads of ``model`` say about the user, by the names scores and
        explanations use."""
        return self._terms(ms.predictions, ms.segment, model)

    def _terms(
        self, predictions: tuple[float, ...], segment: int | None, model: GlobalModel
    ) -> dict[str, float]:
        terms = {"propensity": predictions[0], "segment_rank": _segment_rank(segment, model)}
        for spec, value in zip(self.head_specs, predictions, strict=False):
            if spec.target == "purchase" and spec.horizon_ms != self.horizons.label_ms:
                terms["propensity_long"] = value
            elif spec.target == "churn":
                terms["churn_risk"] = value
            elif spec.target == "count":
                terms["expected_purchases"] = value
            elif spec.target == "spend":
                terms["expected_value"] = value
                terms["expected_value_log"] = math.log1p(value)
        return terms

    def _value(self, state: UserState, now: int, ms: ModelScore) -> Score:
        terms = self._model_terms(ms, self.models.model)
        return self.scorer.score(state.features, now, terms)

    def _change(
        self,
        state: UserState,
        user_id: str,
        decision: TierDecision,
        score: Score,
        ms: ModelScore,
        terms: dict[str, float],
        model: GlobalModel,
        now: int,
        event_time_ms: int,
        emitted_at_ms: int,
        kind: str,
    ) -> TierChange:
        previous = state.tier
        state.tier = decision.tier
        state.seq += 1
        state.tier_since_ms = now
        top = _contributions(score.top(TOP_CONTRIBUTIONS))
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
            scores=self._scores(score, ms, terms),
            reason={
                "kind": "first_tier" if previous is None else kind,
                "threshold": decision.threshold,
                "direction": decision.direction,
                "contributions": top,
                "propensity_terms": self._logit_terms(ms, TOP_CONTRIBUTIONS),
                "nearest_segment": ms.segment,
            },
            model_version=f"{model.name}.{self.policy_digest}",
            lifetime_ms=state.born_ms,
        )

    def _erased(
        self,
        state: UserState,
        user_id: str,
        request_id: str,
        requested_ms: int,
        emitted_at_ms: int,
        model: GlobalModel,
    ) -> TierChange:
        """The last change of the user's lifetime: no tier any more, no scores, no
        reasons beyond the erasure itself (it must not publish what it erases)."""
        return TierChange(
            user_id=user_id,
            previous_tier=state.tier,
            tier=None,
            previous_tier_rank=self._rank(state.tier),
            control=self.control.holds(user_id),
            seq=state.seq + 1,
            event_time_ms=requested_ms,
            emitted_at_ms=emitted_at_ms,
            scores={},
            reason={
                "kind": "erased",
                "threshold": None,
                "direction": "none",
                "request_id": request_id,
            },
            model_version=f"{model.name}.{self.policy_digest}",
            lifetime_ms=state.born_ms,
        )

    def _rank(self, tier: str | None) -> int | None:
        """The rank of ``tier``; None for no tier, or one the config no longer has."""
        try:
            return None if tier is None else self.policy.rank(tier)
        except KeyError:
            return None

    def _scores(
        self, score: Score, ms: ModelScore, terms: dict[str, float]
    ) -> dict[str, float | None]:
        return {
            "value_score": score.value,
            "propensity": ms.propensity,
            "segment": ms.segment,
            "segment_distance": ms.distance,
            **{name: terms[name] for name in EXTRA_SCORES if name in terms},
        }

    def _logit_terms(self, ms: ModelScore, top: int | None) -> list[dict[str, float | str]]:
        names, terms = self.models.model.feature_names, ms.logit_terms
        if len(names) != len(terms):
            raise ValueError(f"{len(terms)} logit terms for {len(names)} features")
        # Largest magnitude first, ties in feature order (a stable sort, reversed).
        order = sorted(range(len(terms)), key=list(map(abs, terms)).__getitem__, reverse=True)
        return [{"feature": names[i], "contribution": terms[i]} for i in order[:top] if terms[i]]

    def _arm(self, state: UserState) -> None:
        """Set when this user's timer fires next (:meth:`Horizons.next_due`)."""
        state.due_ms = self.horizons.next_due(state)


#: A resolved first-head label waiting for the batch's scores: (snapshot, label, control).
_Label = tuple[list[Any], bool, bool]


class Decision:
    """What one event, timer or erasure of a pass decides, known once the pass finishes
    (:meth:`EnginePass.finish`): the tier change, if any, and the propensity labels it
    resolved. Filled in the order the pass was given its work, so every decision sees
    the user's tier as the ones before left it."""

    __slots__ = (
        "_erase",
        "_grid",
        "_kind",
        "_labels",
        "_model",
        "_now",
        "_parts",
        "_row",
        "_rows",
        "_snapshots",
        "_stamp",
        "_state",
        "_time",
        "_user",
        "change",
        "resolved",
    )

    def __init__(self, state: UserState, user: str, labels: list[_Label]) -> None:
        self._state = state
        self._user = user
        self._labels = labels
        self._rows: _Rows | None = None
        self._row = -1
        self._model: GlobalModel | None = None
        self._now = self._time = self._stamp = -1
        self._kind = ""
        self._snapshots: list[list[Any]] = []
        self._parts: tuple[float, tuple[tuple[str, float, float], ...]] = (0.0, ())
        self._erase: tuple[str, int] | None = None
        #: A moment of the learning grid (:meth:`EnginePass._catch_up`): it fills in its
        #: snapshots' scores and resolves labels into the touch's :attr:`resolved`, and
        #: decides no tier.
        self._grid = False
        #: The tier change this decided (None: the tier stays).
        self.change: TierChange | None = None
        #: The first head's labels this resolved, with the snapshot's score and tier.
        self.resolved: list[Resolved] = []


class _Rows:
    """The feature vectors a pass scores with one model version."""

    __slots__ = ("model", "scored", "x")

    def __init__(self, model: GlobalModel) -> None:
        self.model = model
        self.x: list[list[float]] = []
        self.scored: ScoredRows | None = None


class EnginePass:
    """One batch's events and timers through a :class:`TierEngine`, in order.

    Everything that does not depend on a score happens at once, in order: features,
    feature vectors, snapshots and their labels, learning, the next timer (none of them
    reads a score, so versions advance at the same points as one event at a time). The
    vectors are scored together at :meth:`finish`, one array expression per model
    version, and the decisions that need scores (tiers, changes, the scores snapshots
    and labels carry) are then taken in the same order. The results are those of taking
    each event on its own (:meth:`TierEngine.apply` is a pass of one).

    >>> from online_models.event import Event
    >>> tiers = [{"name": "casual"}, {"name": "vip", "min_score": 4}]
    >>> engine = TierEngine(ValueScorer({"spend_30d": 1.0}),
    ...                     TierPolicy.from_config({"tiers": tiers}))
    >>> state = UserState.new()
    >>> run = engine.batch()
    >>> first = run.event(state, Event("e1", "u1", "page_view", 0), emitted_at_ms=5)
    >>> second = run.event(state, Event("e2", "u1", "purchase", 1000, 80.0), emitted_at_ms=6)
    >>> run.finish()
    >>> first.change.tier, second.change.tier, state.seq
    ('casual', 'vip', 2)
    """

    def __init__(self, engine: TierEngine) -> None:
        self.engine = engine
        self._decisions: list[Decision] = []
        self._rows: _Rows | None = None

    def event(self, state: UserState, event: Event, *, emitted_at_ms: int) -> Decision | _Duplicate:
        """Fold ``event`` into ``state`` (DUPLICATE if the user already had it)."""
        if not state.first_sight(event.event_id, event.timestamp_ms):
            return DUPLICATE
        engine = self.engine
        grid = self._catch_up(state, event.user_id, event.timestamp_ms - 1, event.timestamp_ms)
        if state.born_ms < 0:
            state.born_ms = event.timestamp_ms  # the first event of this lifetime
        features = state.features
        late = features.events > 0 and event.timestamp_ms < features.last_ms
        state.fix_snapshots()  # their vectors are of the features before the event
        features.apply(event)
        now = features.last_ms
        model = engine.models.model  # the version that scores it: before it learns
        labels = engine._resolve_due(state, event.user_id, event.timestamp_ms)
        engine._count(state, event)
        on_grid = grid is not None
        spans = [] if late or on_grid else engine._due_spans(state, now)
        learn = not (late or on_grid) and (
            state.learned_ms < 0 or now - state.learned_ms >= engine.horizons.learn_every_ms
        )
        decision = self._observe(state, event.user_id, labels, model, now, spans, learn)
        if grid is not None:
            decision.resolved = grid
        decision._time = event.timestamp_ms
        decision._stamp = emitted_at_ms
        decision._kind = "threshold"
        engine._arm(state)
        return decision

    def fire(self, state: UserState, user_id: str, now_ms: int, *, emitted_at_ms: int) -> Decision:
        """The user's timer at event time ``now_ms``: resolve the snapshots whose horizon
        passed (negative labels for those who never came back) and re-score the silent
        user, so a tier falls by inactivity on time."""
        engine = self.engine
        grid = self._catch_up(state, user_id, now_ms, now_ms)
        closing = engine.horizons.labels_at_rescore or grid is not None
        labels = engine._resolve_due(state, user_id, now_ms, closing=closing)
        model = engine.models.model  # after the labels it learnt, before the sample
        state.rescored_ms = now_ms
        # Past ``max_silence`` the user is gone: no new snapshot, no sample, so the only
        # timer left is the end of their lifetime (a snapshot would arm a deadline, whose
        # firing would take the next one, for ever: one event dated in the year 9999 once
        # fired 1.9 M of them for 20 users).
        present = grid is None and now_ms - state.features.last_ms < engine.horizons.max_silence_ms
        # Snapshots at events alone would all have "days since last event" = 0, and the
        # model would extrapolate wildly for the silent; "will they buy within H days" is
        # as much a question about the silent.
        spans = engine._due_spans(state, now_ms) if present else []
        learn = present and now_ms - state.learned_ms >= engine.horizons.silent_learn_ms()
        decision = self._observe(state, user_id, labels, model, now_ms, spans, learn)
        if grid is not None:
            decision.resolved = grid
        decision._time = now_ms
        decision._stamp = emitted_at_ms
        decision._kind = "inactivity"
        engine._arm(state)
        return decision

    def expire(self, state: UserState, user_id: str, now_ms: int) -> Decision | None:
        """If the user's timer at event time ``now_ms`` ends their lifetime (silent for
        ``expire_after``), its decision (the labels resolved first, as the snapshots' own
        timers would have; a snapshot whose horizon has not passed is dropped, unknown),
        else None. The caller deletes the state."""
        engine = self.engine
        if now_ms - state.features.last_ms < engine.horizons.expire_after_ms:
            return None
        grid = self._catch_up(state, user_id, now_ms, now_ms)
        decision = Decision(state, user_id, engine._resolve_due(state, user_id, now_ms))
        if grid is not None:
            decision.resolved = grid
        state.pending = None
        state.due_ms = -1
        self._decisions.append(decision)
        return decision

    def erase(
        self,
        state: UserState,
        user_id: str,
        request_id: str,
        requested_ms: int,
        *,
        emitted_at_ms: int,
    ) -> Decision:
        """The ``erased`` change of a forgotten user (:mod:`online_models.erasure`),
        taken in order with the others."""
        decision = Decision(state, user_id, [])
        decision._erase = (request_id, requested_ms)
        decision._stamp = emitted_at_ms
        decision._model = self.engine.models.model
        self._decisions.append(decision)
        return decision

    def _catch_up(
        self, state: UserState, user: str, through: int, touch: int
    ) -> list[Resolved] | None:
        """With the learning grid (:attr:`Horizons.learn_on_grid`), the grid's moments
        the user was present at, after those already made and up to ``through``, made
        now from the stored state (the user was silent since: their features then are
        the stored ones, decayed to each moment): each resolves the labels whose window
        ended by then, takes the snapshots due, and gives a learning sample. The list
        the touch's decision gathers their resolved labels in; None without the grid.

        The snapshots' scores come from the version current at the touch, scored with
        the pass; their tier is the user's then (no decision moves it between touches).
        What they teach the models is observed at the touch (event time ``touch``), when
        the silence that makes them is known: a model fitted on history up to a time
        (``tierstream model fit``) made the same moments at the same touches up to it, and
        a deployment starting from it learns those after it.
        """
        engine = self.engine
        h = engine.horizons
        if not h.learn_on_grid:
            return None
        sink: list[Resolved] = []
        features = state.features
        if features.events:
            step = h.learn_every_ms
            last = features.last_ms
            end = min(through, last + h.max_silence_ms - 1)
            first = (max(state.learned_ms, last - 1) // step + 1) * step
            models = engine.models
            for g in range(first, end + 1, step):
                labels = engine._resolve_due(state, user, g, closing=True, learnt_at=touch)
                spans = engine._due_spans(state, g)
                model = models.model  # after the labels it learnt, before the sample
                x = vector(features, g)
                models.learn_sample(x, at_ms=touch)
                if spans:
                    snapshots = engine._snapshot(state, g, x, spans)
                    d = self._scored(state, user, labels, model, x, g, snapshots, grid=True)
                elif labels:
                    d = self._unscored(state, user, labels)
                else:
                    continue
                d._grid = True
                d.resolved = sink
        if through > state.learned_ms:
            state.learned_ms = through
        return sink

    def _observe(
        self,
        state: UserState,
        user: str,
        labels: list[_Label],
        model: GlobalModel,
        now: int,
        spans: list[int],
        learn: bool,
    ) -> Decision:
        """The user at ``now``: a snapshot for each of ``spans``, a learning sample if
        ``learn``, and the decision, scored with ``model`` unless nothing needs a score
        (no snapshot, no sample, the tier held: :meth:`_held`)."""
        if not (spans or learn) and self._held(state, now):
            return self._unscored(state, user, labels)
        x = vector(state.features, now)
        snapshots = self.engine._snapshot(state, now, x, spans) if spans else []
        if learn:
            state.learned_ms = now
            self.engine.models.learn_sample(x, at_ms=now)
        return self._scored(state, user, labels, model, x, now, snapshots)

    def _held(self, state: UserState, now: int) -> bool:
        """Whether no score at ``now`` can change the user's tier (the dwell time holds
        it), whatever the decisions before it in this pass: they can only have moved the
        start of the dwell later."""
        return self.engine.policy.holds(state.tier, since_ms=state.tier_since_ms, now_ms=now)

    def _unscored(self, state: UserState, user: str, labels: list[_Label]) -> Decision:
        """The decision of an event or timer that needs no score: no snapshot, no sample,
        and the tier held (:meth:`_held`); it resolves its labels, in order."""
        decision = Decision(state, user, labels)
        self._decisions.append(decision)
        return decision

    def _scored(
        self,
        state: UserState,
        user: str,
        labels: list[_Label],
        model: GlobalModel,
        x: list[float],
        now: int,
        snapshots: list[list[Any]],
        *,
        grid: bool = False,
    ) -> Decision:
        """A decision scored with the pass; a grid moment's (``grid``: the caller marks
        it) scores only fill in its snapshots, so it needs no value-score parts."""
        rows = self._rows
        if rows is None or rows.model is not model:
            rows = self._rows = _Rows(model)
        decision = Decision(state, user, labels)
        decision._rows = rows
        decision._row = len(rows.x)
        rows.x.append(x)
        decision._model = model
        decision._now = now
        decision._snapshots = snapshots
        if not grid:
            decision._parts = self.engine.scorer.feature_parts(state.features, now)
        self._decisions.append(decision)
        return decision

    def finish(self) -> None:
        """Score every vector, then take the decisions in order."""
        engine = self.engine
        resolved = engine.models.resolved
        for decision in self._decisions:
            rows = decision._rows
            if rows is not None and rows.scored is None:
                rows.scored = rows.model.score_rows(rows.x)
            self._take(decision, rows)
            if not decision._grid:  # a grid moment's are in its touch's
                resolved.extend(decision.resolved)
        self._decisions = []
        self._rows = None

    def _take_moment(self, d: Decision, propensity: float) -> None:
        """A grid moment's decision: its snapshots' propensity and tier, nothing else."""
        label_ms = self.engine.horizons.label_ms
        for snap in d._snapshots:
            snap[3] = propensity
            if snap[0] == label_ms:
                snap[6] = d._state.tier

    def _take(self, d: Decision, rows: _Rows | None) -> None:
        engine, state = self.engine, d._state
        for snap, label, control in d._labels:
            if snap[3] is not None:
                tier = snap[6] if snap[6] is not None else state.tier
                d.resolved.append(Resolved(snap[3], label, tier, control))
        if d._erase is not None:
            model = d._model or engine.models.model
            d.change = engine._erased(state, d._user, *d._erase, d._stamp, model)
            return
        if rows is None or rows.scored is None:
            return
        scored, i = rows.scored, d._row
        if d._grid:
            self._take_moment(d, scored.propensity(i))
            return
        scorer = engine.scorer
        total, parts = d._parts
        predictions: tuple[float, ...] | None = None
        terms: dict[str, float] | None = None
        if scorer.needs_only_propensity:  # the other heads only if the tier changes
            propensity = scored.propensity(i)
            rank = _segment_rank(scored.segments[i], rows.model)
            value = scorer.value_with(total, propensity, rank)
        else:
            predictions = scored.predictions(i)
            propensity = predictions[0]
            terms = engine._terms(predictions, scored.segments[i], rows.model)
            value = scorer.value(total, terms)
        for snap in d._snapshots:
            snap[3] = propensity
        decision = engine.policy.decide(
            state.tier, value, since_ms=state.tier_since_ms, now_ms=d._now
        )
        if decision is not None:
            if predictions is None or terms is None:
                predictions = scored.predictions(i)
                terms = engine._terms(predictions, scored.segments[i], rows.model)
            d.change = engine._change(
                state,
                d._user,
                decision,
                scorer.with_model(total, parts, terms),
                scored.model_score(i, predictions),
                terms,
                rows.model,
                d._now,
                d._time,
                d._stamp,
                d._kind,
            )
        label_ms = engine.horizons.label_ms
        for snap in d._snapshots:
            if snap[0] == label_ms and snap[6] is None:
                snap[6] = state.tier


def _segment_rank(segment: int | None, model: GlobalModel) -> float:
    """The segment's rank on the value axis, 0 (the lowest) to 1 (the highest)."""
    k = len(model.centroids)
    return segment / (k - 1) if segment is not None and k > 1 else 0.0


def _contributions(parts: list[tuple[str, float, float]]) -> list[dict[str, Any]]:
    """Score parts as a change and a snapshot show them."""
    return [{"feature": f, "value": v, "contribution": c} for f, v, c in parts]


def _digest(obj: Any) -> str:
    return hashlib.sha256(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)).hexdigest()[:12]
