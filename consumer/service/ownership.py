"""Which input partitions this instance owns, and where it reads each of them from.

Kafka's group protocol says which member a partition belongs to; the state store says
how far its work went. When the group gives this instance a partition, it is acquired
(step 0 of :mod:`consumer.service.checkpoint`: the owner epoch goes up, the outbox is
published) and read from the store's **applied offset + 1**, whatever Kafka's committed
offset says:

- applied + 1 == committed: the usual case;
- applied + 1 > committed: an owner crashed after saving and before committing; the
  records in between are not read again;
- applied + 1 < committed: the store lost writes (a restore, a failover to a lagging
  replica, AOF lost); the records in between are applied again, nothing is skipped;
- nothing applied but the group has committed offsets: the state is gone (or the key
  prefix is not this deployment's). What happens is ``TIERSTREAM_ON_STATE_LOSS``'s:
  ``refuse`` (the default: stop with one line saying so), ``rebuild`` (read the partition
  from its first retained record) or ``continue`` (from the committed offset, starting
  every user afresh).

When the group gives a partition, the input topic's partition count is checked against
the one recorded with the state (:mod:`consumer.service.partitioning`), after the outboxes
are published and before anything is read: a topic that has grown since is refused with
one line until ``tierstream state repartition`` has moved the users; so is a state
written by a version that did not count users by tier, until ``tierstream state
recount`` has counted them (:mod:`consumer.service.tier_counts`).

After a failure (the store or the brokers unreachable, a fenced batch) nothing is
assumed: every partition still assigned is acquired and positioned again, which
republishes what the failed batch saved and re-reads what it did not.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final, Protocol

from consumer.service.checkpoint import Checkpoint
from consumer.service.errors import Fenced, StateLost, StateRolledBack
from consumer.service.partitioning import check_partition_count
from consumer.service.records import InputRecord, KafkaOffsets
from consumer.service.state_store import StateStore
from consumer.service.tier_counts import check_counted

log = logging.getLogger(__name__)
Partition = tuple[str, int]
#: What may happen when the store holds nothing for a partition the group consumed.
STATE_LOSS_POLICIES: Final = ("refuse", "rebuild", "continue")
#: How long a partition this instance released (another owner's epoch was found) waits
#: for the group to confirm it moved, before it is taken back: two session timeouts.
RELEASE_GRACE_S: Final = 20.0


class PartitionSource(Protocol):
    """What ownership needs of the Kafka consumer."""

    def take_rebalance(self) -> tuple[set[Partition], set[Partition]]: ...

    def assignment(self) -> set[Partition]: ...

    def positions(self, partitions: Sequence[Partition]) -> dict[Partition, KafkaOffsets]: ...

    def seek(self, partition: Partition, offset: int) -> None: ...

    def rewind(self, partitions: Iterable[Partition]) -> None: ...

    def commit(self, next_offsets: Mapping[Partition, int]) -> None: ...

    def partition_count(self) -> int | None: ...


class Ownership:
    """Follows the group's assignment and keeps the store's ownership and the consumer's
    positions in line with it (see the module docstring)."""

    def __init__(
        self,
        source: PartitionSource,
        checkpoint: Checkpoint,
        store: StateStore,
        *,
        on_state_loss: str = "refuse",
        input_topic: str | None = None,
        key_prefix: str = "",
        clock: Callable[[], float] = time.monotonic,
        on_republished: Callable[[int], None] = lambda _: None,
    ) -> None:
        if on_state_loss not in STATE_LOSS_POLICIES:
            raise ValueError(f"on_state_loss must be one of {STATE_LOSS_POLICIES}")
        self.source = source
        self.checkpoint = checkpoint
        self.store = store
        self.on_state_loss = on_state_loss
        #: Only this topic's partitions have state; others (the forget requests) are read
        #: from Kafka's committed offsets (None: every topic read has state).
        self.input_topic = input_topic
        #: Named in the refusal of a changed partition count.
        self.key_prefix = key_prefix
        self.clock = clock
        self.on_republished = on_republished
        #: Set after a failure: every assigned partition is acquired again first.
        self.resync_pending = False
        self._released: dict[Partition, float] = {}

    @property
    def held(self) -> set[Partition]:
        """The partitions this instance holds in the store."""
        return set(self.store.held())

    def follow(self, records: Sequence[InputRecord]) -> list[InputRecord]:
        """After a poll: acquire what the group gave, release what it took, and return
        the records of partitions held from before (a newly acquired partition is read
        again from its applied offset, so what the poll fetched of it is dropped)."""
        assigned, _revoked = self.source.take_rebalance()
        everything = self.source.assignment()
        now = {tp for tp in everything if self.input_topic in (None, tp[0])}
        if self.resync_pending:  # what a failed step fetched of the others, read again
            self.source.rewind(everything - now)
        held = self.held
        gone = held - now  # a partition revoked and given back is in ``assigned``
        if gone:
            log.info(
                "partitions revoked: %s",
                _names(gone),
                extra={"event": "revocation", "partitions": [_name(tp) for tp in sorted(gone)]},
            )
            self.checkpoint.release(gone)
            held -= gone
        fresh = (assigned & now) | (now - held)
        fresh -= self._waiting()
        if self.resync_pending:
            fresh |= now - self._waiting()
        if fresh:
            self.acquire(fresh)
        self.resync_pending = False
        keep = self.held - fresh
        return [r for r in records if (r.topic, r.partition) in keep]

    def acquire(self, partitions: Iterable[Partition]) -> None:
        """Acquire ``partitions``, publish their outboxes, and read each from its applied
        offset + 1 (or as the state-loss policy says)."""
        parts = sorted(partitions)
        n = self.checkpoint.recover(parts)
        if n:
            self.on_republished(n)
        self._check_partition_count()
        applied = self.store.applied_offsets(parts)
        kafka = self.source.positions(parts)
        ahead = {}
        for tp in parts:
            start = self._start(tp, applied[tp], kafka[tp])
            self.source.seek(tp, start)
            if applied[tp] is not None and start > (kafka[tp].committed or 0):
                ahead[tp] = start
        if ahead:
            # Applied, and their outputs just published: the group may know it (the last
            # records of a partition would otherwise stay "unconsumed" for ever).
            self.source.commit(ahead)
        log.info(
            "partitions acquired: %s",
            _names(parts),
            extra={"event": "assignment", "partitions": [_name(tp) for tp in sorted(parts)]},
        )

    def _check_partition_count(self) -> None:
        """The input topic still has the partition count the state was written for (else
        users would be looked for in the wrong partition), and its tier populations count
        every user: checked after the outboxes are published (what they hold was computed
        before the change, and is right), before anything is read."""
        if self.input_topic is None:
            return
        count = self.source.partition_count()
        if count is not None:
            check_partition_count(self.store, self.input_topic, count, prefix=self.key_prefix)
            check_counted(self.store, self.input_topic, prefix=self.key_prefix)

    def _start(self, tp: Partition, applied: int | None, kafka: KafkaOffsets) -> int:
        committed, first = kafka.committed, kafka.first
        if applied is None:
            if committed is None:
                return first  # a partition nobody has read yet
            return self._lost(tp, committed, first)
        start = applied + 1
        if start < first:
            message = (
                f"{_name(tp)}: records {start}..{first - 1} were applied to no state and "
                f"are gone from Kafka (retention): the state cannot be made whole"
            )
            if self.on_state_loss == "refuse":
                raise StateLost(f"{message}; set TIERSTREAM_ON_STATE_LOSS=continue to go on")
            log.error("%s; going on from offset %d", message, first)
            return first
        if committed is not None and start != committed:
            log.warning(
                "%s resumes at offset %d, after the last one applied to the state store "
                "(the group's committed offset is %d)",
                _name(tp),
                start,
                committed,
            )
        return start

    def _lost(self, tp: Partition, committed: int, first: int) -> int:
        where = (
            f"the state store holds nothing for {_name(tp)}, but the group has consumed it "
            f"up to offset {committed}: the state was lost, or TIERSTREAM_KEY_PREFIX is "
            "not this deployment's"
        )
        if self.on_state_loss == "refuse":
            raise StateLost(
                f"{where}. Set TIERSTREAM_ON_STATE_LOSS=rebuild to rebuild it from the "
                "retained records, or =continue to go on from the committed offset"
            )
        if self.on_state_loss == "rebuild":
            log.warning("%s; rebuilding it from offset %d", where, first)
            return first
        log.warning("%s; going on from offset %d, every user afresh", where, committed)
        return committed

    def fenced(self, exc: Fenced) -> None:
        """A batch was fenced: find out why, and set things right before the next one.

        A partition whose stored epoch is higher than the one held has another owner:
        it is released, and taken back only if the group still gives it to this instance
        after :data:`RELEASE_GRACE_S`. Any other partition (its epoch went back, or its
        applied offset moved since the load) is acquired again.
        """
        held = self.store.held()
        stored = self.store.epochs(sorted(held))
        taken = {tp for tp, epoch in held.items() if stored[tp] > epoch}
        if taken:
            log.warning(
                "partitions %s have another owner now (a higher epoch in the store): "
                "this instance stalled, or another deployment writes the same keys",
                _names(taken),
            )
            self.checkpoint.release(taken)
            for tp in taken:
                self._released[tp] = self.clock()
        if isinstance(exc, StateRolledBack):
            log.error("%s: reading them again from the store's applied offsets", exc)
        self.resync_pending = True

    def _waiting(self) -> set[Partition]:
        """Released partitions still within their grace period."""
        now = self.clock()
        for tp, since in list(self._released.items()):
            if now - since >= RELEASE_GRACE_S:
                del self._released[tp]
        return set(self._released)


def _name(tp: Partition) -> str:
    return f"{tp[0]}:{tp[1]}"


def _names(partitions: Iterable[Partition]) -> str:
    return ", ".join(_name(tp) for tp in sorted(partitions)) or "none"
