"""The commit protocol: how one batch becomes durable state, published outputs and
committed offsets, in an order that survives a crash (``kill -9``) between any two steps,
a stalled instance coming back (a zombie), and a state store that went back in time.

When the group gives this instance a partition (:meth:`Checkpoint.recover`):

0. **acquire** — raise the partition's owner epoch in the store and hold the new value;
   publish what earlier owners saved and did not clear (the outbox), then trim it, if the
   epoch is still ours. The service then checks the input topic's partition count
   against the one the state was written for, and that the state's tier populations
   count every user (:mod:`consumer.service.tier_counts`), and reads the partition from
   the store's applied offset + 1, not from Kafka's committed offset: the store is where
   the work is (:mod:`consumer.service.ownership`).

For one batch (:meth:`Checkpoint.run_batch`):

1. **load** — WATCH each partition's epoch and applied offset (whoever writes a
   partition's users holds its epoch); read their states, offsets, due timers, tier
   populations, the model and the contributions in one more round trip (two when
   timers fell due). An epoch that is not
   the one held fences the batch (:class:`~consumer.service.errors.Fenced`); an applied
   offset below the one this instance last saved means the store lost writes
   (:class:`~consumer.service.errors.StateRolledBack`).
2. **apply** — records at or below their partition's applied offset were applied by a
   run that crashed before step 6; they are skipped. The rest go through the core in
   offset order.
3. **save** — a. *the partitions*, in partition order, one MULTI/EXEC each in the
   partition's own Redis Cluster slot: its users' states (deleted for users whose
   lifetime ended), timers and watermark, what the batch changes in its tier
   populations and conversion counts, its new applied offset, and its outputs (tier
   changes, current tiers, DLQ records) appended to its outbox.
   Each is all or nothing: if anything watched of it changed, it is not written, nor any
   partition after it, nor b, and the batch is dropped (Fenced). On one Redis server
   (every key on it) one MULTI/EXEC writes every partition of the batch: all or none.
   b. *the learning*, once every partition is written, in the models' slot (a script):
   the model version (if the batch advanced it) and this instance's contribution. If the
   stored model changed since step 1 (another instance wrote a version), or a new
   version of the batch would fold another instance's contribution that changed since
   step 1 (or leave out one made since), nothing is written: the batch's learning is
   then learnt again on the model and contributions stored now (the models go back to
   the batch's start, adopt them and take the batch's learning calls again, in order)
   and written over them, up to five times, then dropped. Its states stand either way.
4. **check** — the partitions' epochs are still ours: an instance that stalled between 3
   and 4 while its partitions moved on stops here instead of publishing old outputs after
   the new owner's.
5. **publish** — send the outputs, flush, and wait for every acknowledgement. In the
   service (``pipelined``) a batch sends its outputs and returns: their
   acknowledgements are awaited (and steps 6 and 7 taken) by the next batch once it is
   saved, before it sends its own, or before anything else touches the partitions
   (acquiring, releasing, forwarding, idle, stopping: :meth:`Checkpoint.settle`). The
   broker's round trip overlaps the next batch's load, apply and save; one batch's
   outputs are in flight at a time, so they are still published in order, and a
   crash leaves the unacknowledged ones in the outboxes (step 0 publishes them).
6. **commit** — commit the next offsets to Kafka: with a commit interval
   (``TIERSTREAM_COMMIT_INTERVAL_MS``), at most that often, the newest of each partition,
   and at once when the instance is idle or stops (:mod:`consumer.service.offset_commits`:
   no guarantee rests on these offsets; the store's applied offset is where a partition
   is read from).
7. **clear** — trim the published entries from the outboxes, each trim guarded by the
   epoch (a zombie's trim would drop the new owner's entries).

A batch whose partition ran out of loaded timers (the store loads them in bounded slices)
stops at that point; the rest of its records go through steps 1-7 again at once.

Guarantees: state is exactly-once, and so are the tier counts that move with it (step 3a
moves a partition's state, counts and applied offset together; step 2 skips what was
applied; step 0 starts after the last applied offset, so records are never skipped
either, even when the store lags Kafka's offsets). A crash (or a fenced partition) in
the middle of 3a leaves some partitions written, whole, and the others not: the next
owner publishes the written ones' outboxes (step 0) and reads the others again. Learning
is at-most-once, never twice: 3b comes after every 3a, so a crash between them (or a
model changed at every one of 3b's attempts) loses the batch's learning (what its events
taught the models), while its events are never applied, nor learned, again. Outputs are
at-least-once and a duplicate is byte-identical: a crash after 3 leaves them in the
outbox, and the next owner of the partition publishes the outbox (step 0) before it
applies anything new there, which also keeps each user's changes in order. What remains:
an instance that stalls *during* step 5 may, when it wakes, send a copy of outputs the
new owner already published (identical bytes, after newer ones); subscribers drop it by
``event_id``. Pipelined, step 5 lasts until the next poll's records are applied and
saved, or until a rebalance that poll reports is acted on; the group cannot give the
partitions to another member before this one rejoins, so the window is the same: a
stall (or sends retried for longer than the rebalance takes).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from consumer.service.batch import BatchOutcome, BatchStep
from consumer.service.errors import Fenced, StateRolledBack
from consumer.service.offset_commits import DeferredCommits, OffsetCommitter
from consumer.service.records import InputRecord, OutputRecord, unpack_outbox
from consumer.service.state_store import Loaded, StateStore

log = logging.getLogger(__name__)
Partition = tuple[str, int]
#: How often a batch's learning is learnt again on a version another instance wrote
#: meanwhile (3b) before it is dropped.
REBASES: Final = 5
#: A test hook called with the name of each step as it completes (``save-partitions``
#: after 3a, ``save`` after 3b).
StepHook = Callable[[str], None]
#: Called with a batch's outcome once its partitions are saved (step 3a), with None (every
#: partition of the batch is), or with the partitions written before 3a failed: their
#: records are applied from then on, whatever happens to the later steps, and never read
#: again (the next read starts after the applied offset): the only moment to count them.
SavedHook = Callable[[BatchOutcome, Sequence[Partition] | None], None]


class Sent(Protocol):
    """Outputs handed to a :class:`Sink`."""

    def wait(self) -> None:
        """Return once all are durable (raise PublishError if one is not)."""
        ...


class Sink(Protocol):
    """Where outputs go (Kafka, or a list in a replay)."""

    def publish(self, records: Sequence[OutputRecord]) -> None:
        """Publish in order; return only once all are durable."""
        ...

    def send(self, records: Sequence[OutputRecord]) -> Sent:
        """Publish in order; :meth:`Sent.wait` returns once all are durable. Only once
        the previous one was waited for."""
        ...


@dataclass
class _InFlight:
    """A batch's outputs sent and not yet settled (steps 5-7 of it left)."""

    sent: Sent | None
    #: Step 6: the next offsets of the batch's partitions.
    offsets: Mapping[Partition, int]
    #: Step 7: how many entries of each partition's outbox the batch appended.
    outbox: dict[Partition, int]


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
        on_saved: SavedHook | None = None,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        commit_interval_s: float = 0.0,
        pipelined: bool = False,
    ) -> None:
        self.step = step
        self.store = store
        self.source = source
        #: Step 6, at most every ``commit_interval_s`` (0: every batch).
        self.commits = DeferredCommits(source, interval_s=commit_interval_s)
        self.publisher = publisher
        #: What stamps ``emitted_at`` (None: each change's own event time, in replays).
        self.clock_ms = clock_ms
        #: The wall clock the event-time window is measured from, in replays too.
        self.wall_ms = wall_ms
        self.timer = timer
        self.on_step = on_step or (lambda _: None)
        self.on_saved = on_saved or (lambda _o, _p: None)
        #: The applied offset this instance last saved, per partition it holds.
        self.saved: dict[Partition, int] = {}
        #: Whether a batch's steps 5-7 wait for the next batch (``pipelined``: its
        #: outputs are acknowledged while the next batch is read, loaded, applied and
        #: saved) or are taken at its end.
        self.pipelined = pipelined
        #: The last batch's publication, settled by the next batch (after its save) or
        #: before anything else touches the partitions (:meth:`settle`).
        self._in_flight: _InFlight | None = None

    def recover(self, partitions: Iterable[Partition]) -> int:
        """Step 0 for ``partitions``: acquire them, then publish and trim what earlier
        owners saved but did not clear. Returns how many outputs were published."""
        parts = sorted(partitions)
        if not parts:
            return 0
        # The outbox is read below: what the last batch appended to it is cleared first.
        self.settle()
        self.store.acquire(parts)
        # What was noted before is of an earlier holding: the partition is read from the
        # store's applied offset now, which acquiring commits if the group is behind it.
        self._forget_holding(parts)
        self.on_step("acquire")
        republished = 0
        for tp in parts:
            entries = self.store.outbox(tp)
            if not entries:
                continue
            pending = [record for entry in entries for record in unpack_outbox(entry)]
            log.info("publishing %d pending outputs of %s:%d", len(pending), *tp)
            self.publisher.publish(pending)
            self.on_step("republish")
            self.store.clear_outbox(tp, len(entries))
            republished += len(pending)
        return republished

    def release(self, partitions: Iterable[Partition]) -> None:
        """The group took ``partitions`` away: stop holding them."""
        parts = list(partitions)
        # Acknowledged before another owner may publish after them; a trim another owner
        # fenced leaves its entries to that owner (published again: at least once).
        self.settle(tolerate_fenced=True)
        self.store.release(parts)
        self._forget_holding(parts)

    def _forget_holding(self, parts: Sequence[Partition]) -> None:
        """Drop what this instance noted of holding ``parts`` (offsets to commit, the
        applied offsets it saved): they are of a holding that ended."""
        self.commits.drop(parts)
        for tp in parts:
            self.saved.pop(tp, None)

    def flush_commits(self) -> None:
        """The last batch settled (:meth:`settle`) and step 6 now for everything applied
        and not yet committed (when idle, before stopping): raises as a batch's steps
        5-7 do."""
        self.settle()
        self.commits.flush()

    def settle(self, *, tolerate_fenced: bool = False) -> None:
        """Steps 5-7 of the last batch, whose outputs were sent at its end: wait for
        their acknowledgements, commit its offsets (at most every commit interval), trim
        its entries from the outboxes. Raises PublishError (the entries stay in the
        outboxes, published again when the partitions are acquired again), BrokerError
        (a commit) or Fenced (the group refused the commit, or a trim's epoch check
        failed, after the other trims; not with ``tolerate_fenced``, when the partitions
        are being given up); settled either way.

        An entry left in an outbox is never lost: a trim drops the oldest entries, and
        the outputs of a partition are published in the order they were appended."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is None:
            return
        if in_flight.sent is not None:
            in_flight.sent.wait()  # 5. publish: every output acknowledged
        self.on_step("publish")
        fenced: list[Fenced] = []
        if in_flight.offsets:
            try:
                self.commits.commit(in_flight.offsets)  # 6. commit (at most every interval)
            except Fenced as exc:  # the group moved on: refused, as a trim would be
                if not tolerate_fenced:
                    raise
                fenced.append(exc)
        self.on_step("commit")
        if in_flight.outbox:
            try:
                self.store.clear_outboxes(in_flight.outbox)  # 7. clear
            except Fenced as exc:  # the others are trimmed
                fenced.append(exc)
        self.on_step("clear")
        if fenced and not tolerate_fenced:
            raise fenced[0]
        for why in fenced:
            log.info("outputs left to the partition's new owner: %s", why)

    def run_batch(self, records: Sequence[InputRecord]) -> CheckpointStats:
        """Steps 1-7 for one batch, again for its rest while a partition stops early
        (raises Fenced, StateRolledBack, StateStoreError or PublishError)."""
        stats = self._run_records(records)
        while stats.outcome.cut:
            cut = stats.outcome.cut
            rest = [r for r in records if r.offset >= cut.get((r.topic, r.partition), 1 << 62)]
            more = self._run_records(rest)
            stats = _merged(stats, more)
            records = rest
        return stats

    def advance(self, partitions: Sequence[Partition], watermark_ms: int) -> CheckpointStats:
        """Event time reaches ``watermark_ms`` on ``partitions`` with no further record
        (the end of a replay with ``--until``): the timers due by then fire, through the
        same steps as a batch (nothing to commit to Kafka)."""
        bounds = {tp: watermark_ms for tp in partitions}
        stats = self._advance(bounds)
        while stats.outcome.advanced_to:
            stats = _merged(stats, self._advance(bounds))
        return stats

    def _advance(self, bounds: Mapping[Partition, int]) -> CheckpointStats:
        return self._run(
            list(bounds),
            {},
            bounds,
            lambda loaded: self.step.advance(loaded, bounds, emitted_at_ms=self.clock_ms()),
            lambda _: {},
        )

    def _run_records(self, records: Sequence[InputRecord]) -> CheckpointStats:
        decoded = self.step.decode(records, now_ms=self.wall_ms())
        ends: dict[Partition, int] = {}
        for r in records:
            tp = (r.topic, r.partition)
            if r.offset >= ends.get(tp, 0):
                ends[tp] = r.offset + 1

        def apply(loaded: Loaded) -> BatchOutcome:
            return self.step.apply(decoded, loaded, emitted_at_ms=self.clock_ms())

        def next_offsets(outcome: BatchOutcome) -> Mapping[Partition, int]:
            return {**ends, **outcome.cut}  # a partition that stopped early: up to there

        return self._run(decoded.partitions, decoded.users, decoded.newest, apply, next_offsets)

    def _run(
        self,
        partitions: Sequence[Partition],
        users: Mapping[Partition, Sequence[str]],
        timer_bounds: Mapping[Partition, int],
        apply: Callable[[Loaded], BatchOutcome],
        next_offsets: Callable[[BatchOutcome], Mapping[Partition, int]],
    ) -> CheckpointStats:
        t0 = self.timer()
        point = self.step.rollback_point()
        txn = self.store.begin(partitions)
        try:
            loaded = txn.load(users, timer_bounds)  # 1. load
            self._check_not_rolled_back(loaded)
            t1 = self.timer()
            self.on_step("load")
            outcome = apply(loaded)  # 2. apply
            self.on_step("apply")
            written: list[Partition] = []
            try:
                txn.save_partitions(outcome.save, written.append)  # 3a. save the partitions
            except BaseException:
                if written:
                    self.on_saved(outcome, written)
                raise
            self.saved.update(outcome.save.applied)
            self.on_saved(outcome, None)
            self.on_step("save-partitions")
            learned = txn.save_learning(outcome.save)  # 3b. save the learning
        except BaseException:
            txn.abort()
            self.step.rollback(point)  # the batch's learning is not saved: unlearn it
            raise
        if not learned:
            self._rebase_learning(point, outcome)
        t2 = self.timer()
        self.on_step("save")
        # The previous batch's outputs were acknowledged meanwhile (or are waited for
        # now): this batch's are sent after them, in order.
        self.settle()
        outputs = [o for outs in outcome.outputs.values() for o in outs]
        sent = None
        if outputs:
            self.store.check_owner(partitions)  # 4. check
            self.on_step("check")
            sent = self.publisher.send(outputs)  # 5. publish: sent, acknowledged later
        self._in_flight = _InFlight(
            sent,
            next_offsets(outcome),
            {tp: len(entries) for tp, entries in outcome.save.outbox.items() if entries},
        )
        if not self.pipelined:
            self.settle()
        t3 = self.timer()
        return CheckpointStats(outcome, t1 - t0, t2 - t1, t3 - t2)

    def _rebase_learning(self, point: tuple[object, bytes | None], outcome: BatchOutcome) -> None:
        """3b again: another instance wrote a model version since the load (or changed a
        contribution the batch's new version folds), so the learning was not written.
        The batch's states are saved; its learning is learnt again on the model and
        contributions stored now and written over them, up to :data:`REBASES` times,
        then dropped (the next batch starts from the stored version). A failure in
        between drops it too, as between 3a and 3b."""
        for attempt in range(1, REBASES + 1):
            txn = self.store.begin([])
            try:
                loaded = txn.load({}, {})
                save = self.step.rebase(point, loaded, outcome)
                learned = txn.save_learning(save)
            except BaseException:
                txn.abort()
                self.step.rollback(point)
                raise
            outcome.learning_rebases = attempt
            if learned:
                log.debug("the batch's learning was learnt again on a newer model version")
                return
        self.step.rollback(point)
        log.warning(
            "the global model (or a contribution its new version folds) changed %d times "
            "while this batch's learning was saved: its learning is dropped, the next batch "
            "continues from the stored version",
            REBASES + 1,
        )
        outcome.learning_dropped = True
        outcome.model_advanced = False
        outcome.folded = []

    def _check_not_rolled_back(self, loaded: Loaded) -> None:
        behind = {
            tp: (stored, self.saved[tp])
            for tp, stored in loaded.applied.items()
            if tp in self.saved and stored < self.saved[tp]
        }
        if behind:
            raise StateRolledBack(
                "the state store lost writes: applied offsets (stored, saved by this "
                f"instance) {behind}",
                partitions=sorted(behind),
            )


def _merged(a: CheckpointStats, b: CheckpointStats) -> CheckpointStats:
    """Two rounds of one batch as one (for metrics and the caller's tallies)."""
    out, more = a.outcome, b.outcome
    for tp, tally in more.tallies.items():
        out.tally(tp).add(tally)
    out.changes.extend(more.changes)
    out.resolved.extend(more.resolved)
    out.populations.update(more.populations)
    out.model_advanced = out.model_advanced or more.model_advanced
    out.learning_rebases += more.learning_rebases
    out.learning_dropped = out.learning_dropped or more.learning_dropped
    out.folded = more.folded or out.folded
    if more.max_event_ms is not None and (
        out.max_event_ms is None or more.max_event_ms > out.max_event_ms
    ):
        out.max_event_ms = more.max_event_ms
    for tp, outs in more.outputs.items():
        out.outputs.setdefault(tp, []).extend(outs)
    out.cut = more.cut
    out.advanced_to = more.advanced_to
    return CheckpointStats(out, a.load_s + b.load_s, a.save_s + b.save_s, a.publish_s + b.publish_s)
