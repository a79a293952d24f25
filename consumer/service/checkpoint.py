"""The commit protocol: how one batch becomes durable state, published outputs and
committed offsets, in an order that survives a crash (``kill -9``) between any two steps.

For one batch:

1. **load** — WATCH the batch's partitions' applied-offset keys and read the users'
   states and those offsets in one round trip.
2. **apply** — records at or below their partition's applied offset were applied by a
   run that crashed before step 5; they are skipped. The rest go through the core in
   offset order.
3. **save** — in one MULTI/EXEC: user states, the new applied offsets, and the batch's
   outputs (tier changes, DLQ records) appended to each partition's outbox. All or
   nothing. If another instance saved one of these partitions since step 1, nothing
   is written and the batch is dropped (:class:`~consumer.service.errors.Fenced`).
4. **publish** — send the outputs, flush, and wait for every acknowledgement.
5. **commit** — commit the next offsets to Kafka.
6. **clear** — trim the published entries from the outboxes.

Guarantees: state is exactly-once (step 3 moves state and applied offset together;
step 2 skips what was applied). Outputs are at-least-once and a duplicate is
byte-identical: a crash after 3 leaves them in the outbox, and the next owner of the
partition publishes the outbox (:meth:`Checkpoint.recover`) before it applies anything
new there, which also keeps each user's changes in order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from consumer.service.batch import BatchOutcome, BatchStep
from consumer.service.records import InputRecord, OutputRecord
from consumer.service.state_store import Loaded, StateStore

log = logging.getLogger(__name__)
Partition = tuple[str, int]
#: A test hook called with the name of each step as it completes.
StepHook = Callable[[str], None]


class OffsetCommitter(Protocol):
    """Where consumed offsets are committed (the Kafka consumer group)."""

    def commit(self, next_offsets: Mapping[Partition, int]) -> None:
        """Commit the next offset to read, per partition."""
        ...


class Sink(Protocol):
    """Where outputs go (Kafka, or a list in a replay)."""

    def publish(self, records: Sequence[OutputRecord]) -> None:
        """Publish in order; return only once all are durable."""
        ...


@dataclass
class CheckpointStats:
    """What the last batch did, for metrics."""

    outcome: BatchOutcome
    load_s: float
    save_s: float
    publish_s: float


class Checkpoint:
    """Runs batches through the commit protocol described in the module docstring."""

    def __init__(
        self,
        step: BatchStep,
        store: StateStore,
        source: OffsetCommitter,
        publisher: Sink,
        *,
        clock_ms: Callable[[], int | None],
        timer: Callable[[], float],
        on_step: StepHook | None = None,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.step = step
        self.store = store
        self.source = source
        self.publisher = publisher
        #: What stamps ``emitted_at`` (None: each change's own event time, in replays).
        self.clock_ms = clock_ms
        #: The wall clock the event-time window is measured from, in replays too.
        self.wall_ms = wall_ms
        self.timer = timer
        self.on_step = on_step or (lambda _: None)

    def recover(self, partitions: Iterable[Partition]) -> int:
        """Publish what earlier owners of ``partitions`` saved but did not clear."""
        republished = 0
        for tp in partitions:
            entries = self.store.outbox(tp)
            if not entries:
                continue
            log.info("publishing %d pending outputs of %s:%d", len(entries), *tp)
            self.publisher.publish([OutputRecord.from_frame(e) for e in entries])
            self.store.clear_outbox(tp, len(entries))
            republished += len(entries)
        return republished

    def run_batch(self, records: Sequence[InputRecord]) -> CheckpointStats:
        """Steps 1-6 for one batch (raises Fenced, StateStoreError or PublishError)."""
        decoded = self.step.decode(records, now_ms=self.wall_ms())
        next_offsets: dict[Partition, int] = {}
        for r in records:
            tp = (r.topic, r.partition)
            if r.offset >= next_offsets.get(tp, 0):
                next_offsets[tp] = r.offset + 1
        return self._run(
            decoded.partitions,
            decoded.users,
            decoded.newest,
            lambda loaded: self.step.apply(decoded, loaded, emitted_at_ms=self.clock_ms()),
            next_offsets,
        )

    def advance(self, partitions: Sequence[Partition], watermark_ms: int) -> CheckpointStats:
        """Event time reaches ``watermark_ms`` on ``partitions`` with no further record
        (the end of a replay with ``--until``): the timers due by then fire, through the
        same steps as a batch (nothing to commit to Kafka)."""
        bounds = {tp: watermark_ms for tp in partitions}
        return self._run(
            partitions,
            [],
            bounds,
            lambda loaded: self.step.advance(loaded, bounds, emitted_at_ms=self.clock_ms()),
            {},
        )

    def _run(
        self,
        partitions: Sequence[Partition],
        users: Sequence[str],
        timer_bounds: Mapping[Partition, int],
        apply: Callable[[Loaded], BatchOutcome],
        next_offsets: Mapping[Partition, int],
    ) -> CheckpointStats:
        t0 = self.timer()
        point = self.step.rollback_point()
        try:
            txn = self.store.begin(partitions)
            loaded = txn.load(users, timer_bounds)  # 1. load
            t1 = self.timer()
            self.on_step("load")
            outcome = apply(loaded)  # 2. apply
            self.on_step("apply")
            txn.save(outcome.save)  # 3. save
        except BaseException:
            self.step.rollback(point)  # the batch will be read again: unlearn it
            raise
        t2 = self.timer()
        self.on_step("save")
        outputs = [o for outs in outcome.outputs.values() for o in outs]
        if outputs:
            self.publisher.publish(outputs)  # 4. publish
        t3 = self.timer()
        self.on_step("publish")
        if next_offsets:
            self.source.commit(next_offsets)  # 5. commit
        self.on_step("commit")
        for tp, entries in outcome.save.outbox.items():  # 6. clear
            if entries:
                self.store.clear_outbox(tp, len(entries))
        self.on_step("clear")
        return CheckpointStats(outcome, t1 - t0, t2 - t1, t3 - t2)
