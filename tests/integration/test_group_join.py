"""A member's first assignment in its consumer group holds partitions (real broker).

kafka-python joins the group with whatever topic metadata it has when the first poll
comes; a leader that does not know the subscribed topics yet assigns nothing ("No
partition metadata for topic ..."), and the group forms again once the metadata
arrives. Alone, a member lost a tenth of a second to it; beside others, the other
members heard of the second round only at their next heartbeat (then a third of the
session timeout, 3.3 s by default) during which no one read anything. Seen at every
start of two instances together in the throughput bench, where it made the two-instance
figure swing by a third from run to run.

A member hears of any rebalance only at its next heartbeat, and the one joining is given
nothing until then: heartbeats come every half second (``kafka_io.HEARTBEAT_S``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import pytest
from kafka import TopicPartition

from consumer.service.errors import ClientWedged
from consumer.service.kafka_io import EventSource, ensure_topics
from tests.integration.support import KAFKA, Names

pytestmark = pytest.mark.integration


class _Assignments:
    """Every assignment the group gives one member, in order (partition numbers)."""

    def __init__(self, source: EventSource) -> None:
        self.seen: list[list[int]] = []
        listener = source._rebalances
        note = listener.on_partitions_assigned

        def spy(assigned: Iterable[TopicPartition]) -> None:
            assigned = list(assigned)
            self.seen.append(sorted(tp.partition for tp in assigned))
            note(assigned)

        listener.on_partitions_assigned = spy  # type: ignore[method-assign]


def _poll_until_assigned(source: EventSource, seen: _Assignments, limit_s: float = 30.0) -> None:
    end = time.monotonic() + limit_s
    while not any(seen.seen) and time.monotonic() < end:
        source.poll(200)
    assert any(seen.seen), f"no partition assigned within {limit_s} s: {seen.seen}"


def test_a_new_members_first_assignment_holds_the_topics_partitions() -> None:
    names = Names.fresh()
    ensure_topics(KAFKA, [names.input], partitions=4)
    source = EventSource(KAFKA, names.input, names.group, max_poll_records=100)
    try:
        seen = _Assignments(source)
        _poll_until_assigned(source, seen)
        assert seen.seen == [[0, 1, 2, 3]], seen.seen  # one round, not [] then the partitions
    finally:
        source.close()


def test_so_does_a_replaced_members() -> None:
    """A consumer replaced after a wedged call (its successor made at the next poll)
    joins with the metadata too."""
    names = Names.fresh()
    ensure_topics(KAFKA, [names.input], partitions=2)
    source = EventSource(
        KAFKA, names.input, names.group, max_poll_records=100, session_timeout_s=6.0
    )
    try:
        first = _Assignments(source)
        _poll_until_assigned(source, first)
        source._replace(ClientWedged("a poll did not come back (simulated)"))
        again = _Assignments(source)
        _poll_until_assigned(source, again)
        assert again.seen == [[0, 1]], again.seen
    finally:
        source.close()


def test_a_member_hears_of_a_new_one_within_a_heartbeat_of_half_a_second() -> None:
    """A member hears that the group rebalances only in a heartbeat's answer, and the
    joining member is given nothing until the others have heard and rejoined: heartbeats
    come every half second whatever the session timeout (with the heartbeat at a third of
    this 30-s session, the new member waited up to 10 s while the first read alone)."""
    names = Names.fresh()
    ensure_topics(KAFKA, [names.input], partitions=4)

    def member() -> EventSource:
        return EventSource(
            KAFKA, names.input, names.group, max_poll_records=100, session_timeout_s=30.0
        )

    first = member()
    joiners: list[EventSource] = []
    try:
        held = _Assignments(first)
        _poll_until_assigned(first, held)
        for _ in range(2):  # a second member joins, leaves; another joins
            joiner = member()
            joiners.append(joiner)
            seen = _Assignments(joiner)
            start = time.monotonic()
            while not any(seen.seen) and time.monotonic() - start < 30.0:
                joiner.poll(100)  # both poll, as two instances do
                first.poll(100)
            waited = time.monotonic() - start
            assert seen.seen and len(seen.seen[-1]) == 2, seen.seen
            assert waited < 3.0, f"the new member waited {waited:.1f} s for its partitions"
            joiner.close()  # leaves the group: the first member takes all four again
            end = time.monotonic() + 30.0
            while held.seen[-1] != [0, 1, 2, 3] and time.monotonic() < end:
                first.poll(100)
            assert held.seen[-1] == [0, 1, 2, 3], held.seen
    finally:
        for source in (first, *joiners):
            source.close()
