"""Runs input records through the same batch step and commit protocol as the live
service, without Kafka: records come from any iterable, outputs are collected.

>>> from consumer.tier_config import DEFAULT_TIERS_FILE, load_engine
>>> from consumer.records import InputRecord
>>> recs = [InputRecord("in", 0, 0, None, b"u1",
...         b'{"event_id":"e1","user_id":"u1","event_type":"login","timestamp":0}'),
...         InputRecord("in", 0, 1, None, None, b"nope")]
>>> outputs, store = replay(recs, load_engine(DEFAULT_TIERS_FILE))
>>> [o.topic for o in outputs], store.applied
(['user-tier-changes', 'user-events-dlq'], {('in', 0): 1})
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import islice

from consumer.batch import BatchStep
from consumer.checkpoint import Checkpoint
from consumer.records import InputRecord, OutputRecord
from consumer.state_store import MemoryStateStore
from online_models.engine import TierEngine
from schemas.decode import DEFAULT_MAX_BYTES, EventDecoder

Partition = tuple[str, int]


class CollectingSink:
    """Keeps what would have been published."""

    def __init__(self) -> None:
        self.records: list[OutputRecord] = []

    def publish(self, records: Sequence[OutputRecord]) -> None:
        self.records.extend(records)


class LocalOffsets:
    """Remembers committed offsets in memory."""

    def __init__(self) -> None:
        self.committed: dict[Partition, int] = {}

    def commit(self, next_offsets: Mapping[Partition, int]) -> None:
        self.committed.update(next_offsets)


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
    emitted_at_ms: int = 0,
) -> tuple[list[OutputRecord], MemoryStateStore]:
    """Process ``records`` in batches of ``batch_size``; return outputs and final state.

    ``emitted_at_ms`` is fixed so a replay is byte-for-byte reproducible.
    """
    store = store or MemoryStateStore()
    sink = CollectingSink()
    step = BatchStep(
        engine,
        EventDecoder(max_record_bytes),
        output_topic=output_topic,
        dlq_topic=dlq_topic,
        dlq_max_copy_bytes=dlq_max_copy_bytes,
    )
    checkpoint = Checkpoint(
        step, store, LocalOffsets(), sink, clock_ms=lambda: emitted_at_ms, timer=lambda: 0.0
    )
    it = iter(records)
    while batch := list(islice(it, batch_size)):
        checkpoint.run_batch(batch)
    return sink.records, store
