"""A member's first assignment in its consumer group holds partitions (real broker).

kafka-python joins the group with whatever topic metadata it has when the first poll
comes; a leader that does not know the subscribed topics yet assigns nothing ("No
partition metadata for topic ..."), and the group forms again once the metadata
arrives. Alone, a member lost a tenth of a second to it; beside others, the other
members heard of the second round only at their next heartbeat, a third of the session
timeout (3.3 s by default) during which no one read anything. Seen at every start of
two instances together in the throughput bench, where it made the two-instance figure
swing by a third from run to run.
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
