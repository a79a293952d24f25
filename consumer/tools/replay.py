"""Runs input records through the same batch step and commit protocol as the live
service, without Kafka: records come from any iterable (a file, the generator), outputs
go to a callback, state to memory or Redis.

>>> from consumer.service.tier_config import DEFAULT_TIERS_FILE, load_engine
>>> from consumer.service.records import InputRecord
>>> recs = [InputRecord("in", 0, 0, None, b"u1",
...         b'{"event_id":"e1","user_id":"u1","event_type":"login","timestamp":1767225600000}'),
...         InputRecord("in", 0, 1, None, None, b"nope")]
>>> outputs, store = replay(recs, load_engine(DEFAULT_TIERS_FILE))
>>> [o.topic for o in outputs], store.applied
(['user-tier-changes', 'user-tiers', 'user-events-dlq'], {('in', 0): 1})

**Deterministic output.** The live service stamps a tier change's ``emitted_at`` with the
wall clock; a replay stamps it with the change's own ``event_time`` (the time of the event
that caused it), so two replays of one file give byte-identical outputs, whatever the
batch size. Everything else in the message is what the live service publishes.

>>> orjson.loads(outputs[0].value)["emitted_at"]
'2026-01-01T00:00:00.000Z'

**Event time.** ``until_ms`` drops events later than it (records that cannot be read
still go to the DLQ), and at the end the event-time watermark advances to it
(:meth:`Replay.advance_watermark`): the timers due by then fire as they would have in the
live service once its stream reached that time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice

import orjson

from consumer.service.batch import BatchStep
from consumer.service.checkpoint import Checkpoint, CheckpointStats
from consumer.service.records import InputRecord, OutputRecord
from consumer.service.settings import Settings
from consumer.service.state_store import MemoryStateStore, StateStore
from online_models.engine import TierEngine
from schemas.decode import DEFAULT_MAX_BYTES, EventDecoder, Limits, parse_rfc3339_ms

__all__ = [
    "BatchHook",
    "LocalOffsets",
    "Replay",
    "ReplaySink",
    "ReplaySummary",
    "event_time",
    "replay",
]

Partition = tuple[str, int]
#: Called after each batch with its statistics and records (progress, the demo's charts).
BatchHook = Callable[[CheckpointStats, Sequence[InputRecord]], None]


class ReplaySink:
    """Receives what the live service would publish, in publish order, and hands each
    record to ``emit``."""

    def __init__(self, emit: Callable[[OutputRecord], None]) -> None:
        self.emit = emit

    def publish(self, records: Sequence[OutputRecord]) -> None:
        for rec in records:
            self.emit(rec)

    def send(self, records: Sequence[OutputRecord]) -> ReplaySink:
        """Published at once (its own :meth:`wait` has nothing to wait for)."""
        self.publish(records)
        return self

    def wait(self) -> None:
        """Nothing is left to wait for."""


class LocalOffsets:
    """Remembers committed offsets in memory."""

    def __init__(self) -> None:
        self.committed: dict[Partition, int] = {}

    def commit(self, next_offsets: Mapping[Partition, int]) -> None:
        self.committed.update(next_offsets)


@dataclass
class ReplaySummary:
    """What a replay did."""

    records: int = 0
    batches: int = 0
    #: ``applied``, ``duplicate``, ``dlq``, ``skipped`` (applied to this state before).
    results: Counter[str] = field(default_factory=Counter)
    dlq_reasons: Counter[str] = field(default_factory=Counter)
    tier_changes: int = 0
    #: User timers that fired (label deadlines, re-scores of the silent, expiries): on a
    #: sparse history they outnumber the events, and they are where its time goes.
    timers_fired: int = 0
    #: Events dropped for being later than ``until_ms``.
    after_until: int = 0
    #: Outputs a crashed earlier replay into the same store had saved and not published.
    republished: int = 0
    max_event_ms: int | None = None


class Replay:
    """The live service's :class:`BatchStep` and :class:`Checkpoint` over an iterable.

    ``store`` is memory by default; a :class:`~consumer.service.redis_store.RedisStateStore`
    continues a deployment's state (records at or below the source's applied offset are
    skipped, as in the service). ``emitted_at_ms`` fixes every change's ``emitted_at``;
    by default it is the change's event time.
    """

    def __init__(
        self,
        engine: TierEngine,
        store: StateStore | None = None,
        *,
        emit: Callable[[OutputRecord], None],
        on_batch: BatchHook | None = None,
        batch_size: int = 2000,
        output_topic: str = "user-tier-changes",
        dlq_topic: str = "user-events-dlq",
        max_record_bytes: int = DEFAULT_MAX_BYTES,
        dlq_max_copy_bytes: int = 256 * 1024,
        emitted_at_ms: int | None = None,
        instance_id: str = "local",
        limits: Limits | None = None,
        check_keys: bool = True,
        tiers_topic: str = "user-tiers",
    ) -> None:
        if batch_size <= 0:
            raise ValueError("batch_size must be positive")
        self.engine = engine
        self.store: StateStore = store if store is not None else MemoryStateStore()
        self.on_batch = on_batch
        self.batch_size = batch_size
        self.summary = ReplaySummary()
        #: Event time the replay has reached with no event pending (None: not advanced).
        self.watermark_ms: int | None = None
        step = BatchStep(
            engine,
            EventDecoder(max_record_bytes, limits=limits),
            output_topic=output_topic,
            dlq_topic=dlq_topic,
            dlq_max_copy_bytes=dlq_max_copy_bytes,
            instance_id=instance_id,
            check_keys=check_keys,
            tiers_topic=tiers_topic,
        )
        # No clock: each tier change's emitted_at is its own event time (reproducible).
        self.checkpoint = Checkpoint(
            step,
            self.store,
            LocalOffsets(),
            ReplaySink(emit),
            clock_ms=lambda: emitted_at_ms,
            timer=lambda: 0.0,
        )
        self._recovered: set[Partition] = set()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        store: StateStore,
        *,
        emit: Callable[[OutputRecord], None],
        batch_size: int = 2000,
        shared: bool = False,
        check_keys: bool = True,
    ) -> Replay:
        """A replay set up as the deployment ``settings`` describe: its tiers, topics,
        limits and (from ``store``) model. ``shared``: the store is a deployment's Redis,
        so learning is recorded under this instance's id, as the service records it.
        ``check_keys``: refuse records not keyed by their user id, as the service does
        (records read from a file have no key)."""
        from consumer.service.loop import build_engine  # the service's wiring, not its I/O

        return cls(
            build_engine(settings, store),
            store,
            emit=emit,
            batch_size=batch_size,
            output_topic=settings.output_topic,
            dlq_topic=settings.dlq_topic,
            max_record_bytes=settings.max_record_bytes,
            dlq_max_copy_bytes=settings.dlq_max_copy_bytes,
            instance_id=settings.instance if shared else "local",
            limits=settings.limits,
            check_keys=check_keys,
            tiers_topic=settings.tiers_topic,
        )

    def now_ms(self) -> int | None:
        """Event-time "now" of the replay: the watermark it was advanced to (``--until``),
        else the newest watermark in its store, so scores are as of the end of the stream,
        as the live service would report them."""
        if self.watermark_ms is not None:
            return self.watermark_ms
        return self.store.watermark()

    def run(self, records: Iterable[InputRecord], *, until_ms: int | None = None) -> ReplaySummary:
        """Process ``records`` in batches; then advance the watermark to ``until_ms``."""
        source: Iterator[InputRecord] = iter(records)
        if until_ms is not None:
            source = self._until(source, until_ms)
        s = self.summary
        while batch := list(islice(source, self.batch_size)):
            fresh = {(r.topic, r.partition) for r in batch} - self._recovered
            if fresh:
                s.republished += self.checkpoint.recover(sorted(fresh))
                self._recovered |= fresh
            self._count(self.checkpoint.run_batch(batch), batch)
            s.records += len(batch)
            s.batches += 1
        if until_ms is not None:
            self.advance_watermark(until_ms)
        return s

    def _count(self, stats: CheckpointStats, batch: Sequence[InputRecord]) -> None:
        s, out = self.summary, stats.outcome
        total = out.total()
        s.results.update(total.results)
        s.dlq_reasons.update(total.dlq_reasons)
        s.tier_changes += len(out.changes)
        s.timers_fired += total.timers_fired
        if out.max_event_ms is not None and (
            s.max_event_ms is None or out.max_event_ms > s.max_event_ms
        ):
            s.max_event_ms = out.max_event_ms
        if self.on_batch:
            self.on_batch(stats, batch)

    def advance_watermark(self, watermark_ms: int) -> None:
        """Event time reaches ``watermark_ms`` on every partition read, with no further
        event: every timer due by then fires (label deadlines resolve, silent users are
        re-scored and may fall a tier), through the same save-then-publish steps as a
        batch. Snapshots after it are scored as of the watermark.
        """
        if self.watermark_ms is not None and watermark_ms <= self.watermark_ms:
            return
        self.watermark_ms = watermark_ms
        partitions = sorted(self._recovered)
        if partitions:
            self._count(self.checkpoint.advance(partitions, watermark_ms), [])

    def _until(self, records: Iterator[InputRecord], until_ms: int) -> Iterator[InputRecord]:
        for rec in records:
            t = event_time(rec.value)
            if t is not None and t > until_ms:
                self.summary.after_until += 1
                continue
            yield rec


def event_time(value: bytes | None) -> int | None:
    """The event time of a record, cheaply (no schema validation); None when it has no
    readable one (the batch step then dead-letters the record).

    >>> event_time(b'{"timestamp": "2026-01-01T00:00:00Z"}'), event_time(b'{"timestamp": 5}')
    (1767225600000, 5)
    >>> event_time(b"nope"), event_time(b'{"timestamp": true}')
    (None, None)
    """
    if not value:
        return None
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    ts = obj.get("timestamp") if isinstance(obj, dict) else None
    if isinstance(ts, int) and not isinstance(ts, bool):
        return ts
    if isinstance(ts, str):
        try:
            return parse_rfc3339_ms(ts)
        except ValueError:
            return None
    return None


def replay(
    records: Iterable[InputRecord],
    engine: TierEngine,
    *,
    store: MemoryStateStore | None = None,
    batch_size: int = 2000,
    output_topic: str = "user-tier-changes",
    dlq_topic: str = "user-events-dlq",
    max_record_bytes: int = DEFAULT_MAX_BYTES,
    dlq_max_copy_bytes: int = 256 * 1024,
    emitted_at_ms: int | None = None,
) -> tuple[list[OutputRecord], MemoryStateStore]:
    """Process ``records`` in batches of ``batch_size``; return outputs and final state."""
    store = store if store is not None else MemoryStateStore()
    outputs: list[OutputRecord] = []
    Replay(
        engine,
        store,
        emit=outputs.append,
        batch_size=batch_size,
        output_topic=output_topic,
        dlq_topic=dlq_topic,
        max_record_bytes=max_record_bytes,
        dlq_max_copy_bytes=dlq_max_copy_bytes,
        emitted_at_ms=emitted_at_ms,
    ).run(records)
    return outputs, store
