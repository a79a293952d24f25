"""``tierstream run`` with the engine cut down to the minimal Quix Streams app's work: the
floor of the service's exactly-once path (docs/performance.md, "What 0.75x the Quix app
on the dense workload would take").

Everything around the engine runs as in the service: the Kafka consumer, each record's
decoding and validation, the batch, every touched user's state loaded, decoded, encoded
and written to Redis in the commit protocol, the offsets. Of the engine's work per event
only what the Quix app does is left: the event's dedup and its fold into the user's
features (:meth:`~online_models.features.UserFeatures.apply`). Nothing is scored,
learnt, timed or published: no tier, no tier change. It is a yardstick for the
throughput bench (:mod:`tests.bench.bench_throughput`), not a mode of the service::

    python -m tests.bench.floor_service run --stop-when-idle 2    # the service's settings

>>> from online_models.engine import EnginePass
>>> from online_models.event import Event
>>> from online_models.user_state import UserState
>>> from consumer.service.tier_config import DEFAULT_TIERS_FILE, load_engine
>>> run = cut_down(EnginePass(load_engine(DEFAULT_TIERS_FILE)))
>>> state = UserState.new()
>>> d = run.event(state, Event("e1", "u1", "purchase", 1000, 20.0), emitted_at_ms=0)
>>> run.finish()
>>> run.event(state, Event("e1", "u1", "purchase", 1000, 20.0), emitted_at_ms=0)
DUPLICATE
>>> d.change, state.features.purchases, state.due_ms, state.tier
(None, 1, -1, None)
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from online_models.engine import DUPLICATE, Decision, EnginePass
from online_models.event import Event
from online_models.user_state import UserState


def _fold_only(
    self: EnginePass, state: UserState, event: Event, *, emitted_at_ms: int
) -> Decision | Any:
    """The event's dedup and its fold into the features; a decision that decides nothing."""
    if not state.first_sight(event.event_id, event.timestamp_ms):
        return DUPLICATE
    if state.born_ms < 0:
        state.born_ms = event.timestamp_ms
    state.features.apply(event)
    decision = Decision(state, event.user_id, [])
    self._decisions.append(decision)
    return decision


def cut_down(run: EnginePass) -> EnginePass:
    """``run`` with its per-event work cut down (for the doctest; the service's passes are
    cut down by :func:`main`)."""
    run.event = _fold_only.__get__(run)  # type: ignore[method-assign]
    return run


def main(argv: Sequence[str] | None = None) -> int:
    """``tierstream`` with every engine pass's events folded only."""
    from consumer.cli import main as cli_main

    EnginePass.event = _fold_only  # type: ignore[method-assign,assignment]
    return cli_main(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
