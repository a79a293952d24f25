"""Forgetting a user: the request, and the change that tells subscribers.

A :class:`ForgetRequest` reaches the core in the user's own input partition, after every
event of theirs that was there before it (the service forwards requests there, see
:mod:`consumer.service.forget_forwarder`), so erasing is one more step in the user's
sequence: what came before is erased, what comes after starts a new lifetime.

>>> from online_models.engine import TierEngine
>>> from online_models.event import Event
>>> from online_models.scoring import ValueScorer
>>> from online_models.tier_policy import TierPolicy
>>> from online_models.user_state import UserState
>>> engine = TierEngine(ValueScorer({"spend_30d": 1.0}),
...                     TierPolicy.from_config({"tiers": [{"name": "casual"}]}))
>>> state = UserState.new()
>>> _ = engine.apply(state, Event("e1", "u1", "login", 1000), emitted_at_ms=1000)
>>> change = erased_change(engine, state, ForgetRequest("u1", "r1", 5000), emitted_at_ms=5000)
>>> change.previous_tier, change.tier, change.seq, change.reason["kind"]
('casual', None, 2, 'erased')
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from online_models.tier_change import TierChange

if TYPE_CHECKING:
    from online_models.engine import TierEngine
    from online_models.user_state import UserState


class ForgetRequest(NamedTuple):
    """Erase everything held about ``user_id`` (schema ``forget-request.v1``)."""

    user_id: str
    request_id: str
    #: When the request was made (epoch ms): the event time of the ``erased`` change.
    requested_ms: int


def erased_change(
    engine: TierEngine, state: UserState, request: ForgetRequest, *, emitted_at_ms: int
) -> TierChange:
    """The last change of the user's lifetime: no tier any more, no scores, no reasons
    beyond the erasure itself (it must not publish what it erases). In a batch, the
    engine's pass takes it in order with the other decisions (``EnginePass.erase``)."""
    return engine._erased(
        state,
        request.user_id,
        request.request_id,
        request.requested_ms,
        emitted_at_ms,
        engine.models.model,
    )
