"""Which held partitions the Kafka consumer has stopped reading.

kafka-python 3.0 can stop fetching one of the partitions it holds and say nothing: no
error, no record of that partition from any later poll, until the next rebalance
(dpkp/kafka-python#3131; seen here after the leader of a partition was SIGKILLed: the
consumer went on reading the other partitions for minutes while this one's records
waited on the broker). A service in that state looks healthy and falls behind forever.

:class:`StallWatch` is the pure half of the guard: fed the consumer's position of each
held partition after every poll, it names the partitions whose position has not moved
for ``stall_s`` seconds and ``min_polls`` polls. Those are only suspects: an idle
partition does not move either. The caller asks the brokers for their end offsets
(:class:`~consumer.service.kafka_io.EventSource`), reports the idle ones back with
:meth:`StallWatch.idle` (their clock starts again), and replaces the consumer when a
suspect's end is past its position.

>>> w = StallWatch(stall_s=60.0, min_polls=2)
>>> w.observe({("events", 0): 10, ("events", 1): 7}, now=0.0)
[]
>>> w.observe({("events", 0): 25, ("events", 1): 7}, now=30.0)
[]
>>> w.observe({("events", 0): 40, ("events", 1): 7}, now=61.0)
[('events', 1)]
>>> w.quiet_for(("events", 1), now=61.0)
61.0
>>> w.idle([("events", 1)], now=61.0)  # its end is its position: nothing to read
>>> w.observe({("events", 0): 40, ("events", 1): 7}, now=62.0)
[]

A partition that is revoked is forgotten; one acquired starts a clock of its own:

>>> w.observe({("events", 2): 0}, now=63.0)
[]
>>> sorted(w.held)
[('events', 2)]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

Partition = tuple[str, int]


@dataclass
class _Still:
    position: int
    since: float
    polls: int = 0


class StallWatch:
    """Per held partition, since when and over how many polls its position is still."""

    def __init__(self, stall_s: float, min_polls: int = 3) -> None:
        if stall_s <= 0:
            raise ValueError(f"stall_s must be > 0, not {stall_s}")
        self.stall_s = stall_s
        self.min_polls = min_polls
        self._still: dict[Partition, _Still] = {}

    @property
    def held(self) -> set[Partition]:
        """The partitions watched (those of the last :meth:`observe`)."""
        return set(self._still)

    def observe(self, positions: Mapping[Partition, int], now: float) -> list[Partition]:
        """Note the positions after a poll; the partitions still for long enough."""
        still = self._still
        for gone in still.keys() - positions.keys():
            del still[gone]
        suspects = []
        for tp, position in positions.items():
            s = still.get(tp)
            if s is None or s.position != position:
                still[tp] = _Still(position, now)
                continue
            s.polls += 1
            if s.polls >= self.min_polls and now - s.since >= self.stall_s:
                suspects.append(tp)
        return sorted(suspects)

    def quiet_for(self, tp: Partition, now: float) -> float:
        """Seconds since ``tp``'s position last moved (0 if it is not watched)."""
        s = self._still.get(tp)
        return 0.0 if s is None else now - s.since

    def idle(self, partitions: Iterable[Partition], now: float) -> None:
        """``partitions`` had nothing more to read (or it could not be asked): watch them
        for another ``stall_s`` before suspecting them again."""
        for tp in partitions:
            s = self._still.get(tp)
            if s is not None:
                s.since, s.polls = now, 0
