"""Step 6 of the commit protocol, the group's offsets, committed at most every interval.

The state store's applied offset is where a partition is read from after a rebalance or
a restart (:mod:`consumer.service.ownership`); the offsets the group commits to Kafka are
what monitoring reads as the group's lag, and where a partition with no stored state
starts. So committing them is not on the path of any guarantee, and a synchronous commit
per batch (a round trip to the group coordinator, about a third of a small batch's time)
need not be paid each batch: :class:`DeferredCommits` keeps the newest offset of each
partition and commits them together once ``interval_s`` has passed since the last
commit, and at once when asked to :meth:`~DeferredCommits.flush` (the service does when
a poll brings nothing and before it stops, so an idle or stopped group has committed
everything it applied). A partition given up (revoked, fenced) is
:meth:`~DeferredCommits.drop`-ped: its new owner commits it from then on, and a late
commit of an older offset would move the group's offset back.

An interval of 0 commits every batch, as the protocol's step 6 did before.

>>> class Log:
...     def __init__(self): self.calls = []
...     def commit(self, offsets): self.calls.append(dict(offsets))
>>> now = [0.0]
>>> kafka = Log()
>>> commits = DeferredCommits(kafka, interval_s=1.0, clock=lambda: now[0])
>>> commits.commit({("t", 0): 10})          # the first is committed at once
>>> now[0] = 0.4; commits.commit({("t", 0): 20, ("t", 1): 5})
>>> now[0] = 0.8; commits.commit({("t", 0): 30})
>>> kafka.calls, commits.pending
([{('t', 0): 10}], {('t', 0): 30, ('t', 1): 5})
>>> now[0] = 1.1; commits.commit({("t", 1): 7})
>>> kafka.calls[-1], commits.pending
({('t', 0): 30, ('t', 1): 7}, {})
>>> now[0] = 1.2; commits.commit({("t", 1): 9}); commits.drop([("t", 1)]); commits.flush()
>>> len(kafka.calls), commits.pending
(2, {})
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

Partition = tuple[str, int]


class OffsetCommitter(Protocol):
    """Where consumed offsets are committed (the Kafka consumer group)."""

    def commit(self, next_offsets: Mapping[Partition, int]) -> None:
        """Commit the next offset to read, per partition."""
        ...


class DeferredCommits:
    """Commits through ``committer`` at most every ``interval_s`` (see the module
    docstring); itself an :class:`OffsetCommitter`."""

    def __init__(
        self,
        committer: OffsetCommitter,
        *,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval_s < 0:
            raise ValueError("the commit interval must not be negative")
        self.committer = committer
        self.interval_s = interval_s
        self._clock = clock
        #: The next offset to read of each partition, applied and not yet committed.
        self.pending: dict[Partition, int] = {}
        self._last: float | None = None

    def commit(self, next_offsets: Mapping[Partition, int]) -> None:
        """Note ``next_offsets``; commit everything noted if the interval has passed."""
        pending = self.pending
        for tp, offset in next_offsets.items():
            if offset > pending.get(tp, -1):
                pending[tp] = offset
        last = self._last
        if last is None or self._clock() - last >= self.interval_s:
            self.flush()

    def flush(self) -> None:
        """Commit everything noted now. If the commit fails, it stays noted (the next
        commit or flush tries again) and the error is raised."""
        if not self.pending:  # (the next batch's commit is not held back by this one)
            return
        offsets, self.pending = self.pending, {}
        self._last = self._clock()
        try:
            self.committer.commit(offsets)
        except BaseException:
            for tp, offset in offsets.items():
                if offset > self.pending.get(tp, -1):
                    self.pending[tp] = offset
            raise

    def drop(self, partitions: Iterable[Partition]) -> None:
        """Forget what was noted of ``partitions``: this instance no longer holds them."""
        for tp in partitions:
            self.pending.pop(tp, None)
