"""Applies one event to one user's state and decides whether their tier changes.

Events are applied in the order they were read (per partition offset order), never
re-sorted by event time inside a batch: the features do not care about order (they are
exact for late events), and tier decisions then depend only on the event sequence, not on
how the stream happened to be cut into poll batches. A replay and the live service
therefore produce the same tier changes.

>>> from online_models.event import Event
>>> engine = TierEngine(
...     ValueScorer({"spend_30d": 1.0}),
...     TierPolicy.from_config({"tiers": [{"name": "casual"}, {"name": "vip", "min_score": 4}]}))
>>> state = UserState.new()
>>> engine.apply(state, Event("e1", "u1", "page_view", 0), emitted_at_ms=5).tier
'casual'
>>> engine.apply(state, Event("e2", "u1", "purchase", 1000, 80.0), emitted_at_ms=6).tier
'vip'
>>> engine.apply(state, Event("e2", "u1", "purchase", 1000, 80.0), emitted_at_ms=7) is DUPLICATE
True
>>> state.seq, state.features.events
(2, 2)
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

import orjson

from online_models.event import Event
from online_models.scoring import ValueScorer
from online_models.tier_change import TierChange
from online_models.tier_policy import TierPolicy
from online_models.user_state import UserState

#: How many feature contributions a tier change reports.
TOP_CONTRIBUTIONS: Final = 3


class _Duplicate:
    __slots__ = ()

    def __repr__(self) -> str:
        return "DUPLICATE"


#: Returned by :meth:`TierEngine.apply` for an event the user already had.
DUPLICATE: Final = _Duplicate()


class TierEngine:
    """Feature update + score + tier policy, for one event at a time."""

    def __init__(self, scorer: ValueScorer, policy: TierPolicy) -> None:
        self.scorer = scorer
        self.policy = policy
        self.model_version = "policy-" + _digest(
            {
                "weights": scorer.weights,
                "tiers": [(t.name, t.min_score) for t in policy.tiers],
                "hysteresis": policy.hysteresis,
                "min_dwell_ms": policy.min_dwell_ms,
            }
        )

    def apply(
        self, state: UserState, event: Event, *, emitted_at_ms: int
    ) -> TierChange | _Duplicate | None:
        """Fold ``event`` into ``state``; return the tier change it causes, if any."""
        if state.seen(event.event_id):
            return DUPLICATE
        state.remember(event.event_id)
        features = state.features
        features.apply(event)
        now = features.last_ms
        score = self.scorer.score(features, now)
        decision = self.policy.decide(
            state.tier, score.value, since_ms=state.tier_since_ms, now_ms=now
        )
        if decision is None:
            return None
        previous = state.tier
        state.tier = decision.tier
        state.seq += 1
        state.tier_since_ms = now
        return TierChange(
            user_id=event.user_id,
            previous_tier=previous,
            tier=decision.tier,
            seq=state.seq,
            event_time_ms=event.timestamp_ms,
            emitted_at_ms=emitted_at_ms,
            scores={"value_score": score.value},
            reason={
                "kind": "first_tier" if previous is None else "threshold",
                "threshold": decision.threshold,
                "direction": decision.direction,
                "contributions": [
                    {"feature": c.feature, "value": c.value, "contribution": c.contribution}
                    for c in score.contributions[:TOP_CONTRIBUTIONS]
                ],
            },
            model_version=self.model_version,
        )

    def explain(self, state: UserState, now_ms: int | None = None) -> dict[str, Any]:
        """Where the user stands as of event time ``now_ms`` (default: their last event):
        tier, scores, the feature contributions, and the tier the score alone would give.

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
        now = features.last_ms if now_ms is None else now_ms
        score = self.scorer.score(features, now)
        return {
            "tier": state.tier,
            "seq": state.seq,
            "tier_since_ms": state.tier_since_ms,
            "as_of_ms": now,
            "scores": {"value_score": score.value},
            "score_tier": self.policy.tiers[self.policy.raw_tier(score.value)].name,
            "contributions": [
                {"feature": c.feature, "value": c.value, "contribution": c.contribution}
                for c in score.contributions
            ],
            "model_version": self.model_version,
            "features": features.to_json(),
        }


def _digest(obj: Any) -> str:
    return hashlib.sha256(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)).hexdigest()[:12]
