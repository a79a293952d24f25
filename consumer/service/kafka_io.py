"""Thin wrappers over kafka-python: the input source, the publisher, topic creation.

The rest of the service sees :class:`~consumer.service.records.InputRecord` and
:class:`~consumer.service.records.OutputRecord` only; client errors are re-raised as the
service's own (:mod:`consumer.service.errors`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata

from consumer.service.errors import BrokerUnavailable, PublishError
from consumer.service.records import InputRecord, OutputRecord

log = logging.getLogger(__name__)
Partition = tuple[str, int]


def _unreachable(bootstrap: str, exc: Exception) -> BrokerUnavailable:
    return BrokerUnavailable(
        f"cannot reach Kafka at {bootstrap} ({exc}); start it (make stack-up) "
        "or set TIERSTREAM_KAFKA_BOOTSTRAP"
    )


class EventSource:
    """A consumer-group member on the input topic; offsets are committed explicitly."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        group_id: str,
        *,
        max_poll_records: int,
        connect_timeout_s: float = 15.0,
    ) -> None:
        self.topic = topic
        try:
            self._consumer = KafkaConsumer(
                topic,
                bootstrap_servers=bootstrap.split(","),
                group_id=group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=max_poll_records,
                # Larger than the biggest batch we may need to process between polls.
                max_poll_interval_ms=300_000,
                session_timeout_ms=10_000,
                heartbeat_interval_ms=3_000,
                isolation_level="read_committed",
                client_id=f"tierstream-{group_id}",
                bootstrap_timeout_ms=round(connect_timeout_s * 1000),
            )
        except KafkaError as exc:
            raise _unreachable(bootstrap, exc) from None

    def poll(self, timeout_ms: int) -> list[InputRecord]:
        """The next batch, in offset order within each partition."""
        batches = self._consumer.poll(timeout_ms=timeout_ms)
        out: list[InputRecord] = []
        for tp, records in batches.items():
            out.extend(
                InputRecord(tp.topic, tp.partition, r.offset, r.timestamp, r.key, r.value)
                for r in records
            )
        return out

    def assignment(self) -> set[Partition]:
        """Partitions this member currently owns."""
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def commit(self, next_offsets: Mapping[Partition, int]) -> None:
        """Commit, for each partition, the offset of the next record to read."""
        self._consumer.commit(
            {
                TopicPartition(t, p): OffsetAndMetadata(o, "", -1)
                for (t, p), o in next_offsets.items()
            }
        )

    def rewind(self, partitions: Iterable[Partition]) -> None:
        """Seek back to the committed offsets (or the beginning) to read a batch again."""
        assigned = self.assignment()
        for t, p in partitions:
            if (t, p) not in assigned:
                continue
            tp = TopicPartition(t, p)
            committed = self._consumer.committed(tp)
            if committed is None:
                self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, committed)

    def lag(self) -> int | None:
        """Records not yet read on the owned partitions, from the last fetch; None if unknown."""
        total = 0
        for tp in self._consumer.assignment():
            high = self._consumer.highwater(tp)
            if high is None:
                return None
            total += max(0, high - self._consumer.position(tp))
        return total

    def close(self) -> None:
        """Leave the group (offsets are committed per batch, not here)."""
        self._consumer.close(autocommit=False)


class Publisher:
    """An idempotent producer; :meth:`publish` returns once every record is acknowledged."""

    def __init__(
        self,
        bootstrap: str,
        *,
        max_request_size: int = 4 * 1024 * 1024,
        connect_timeout_s: float = 15.0,
    ) -> None:
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=bootstrap.split(","),
                acks="all",
                enable_idempotence=True,
                linger_ms=5,
                max_request_size=max_request_size,
                client_id="tierstream-publisher",
                bootstrap_timeout_ms=round(connect_timeout_s * 1000),
            )
        except KafkaError as exc:
            raise _unreachable(bootstrap, exc) from None

    def publish(self, records: Sequence[OutputRecord], *, timeout_s: float = 60.0) -> None:
        """Send ``records`` in order and wait for all acknowledgements; raise PublishError."""
        futures = [self._producer.send(r.topic, key=r.key, value=r.value) for r in records]
        self._producer.flush(timeout=timeout_s)
        for fut in futures:
            try:
                fut.get(timeout=0)
            except KafkaError as exc:
                raise PublishError(f"publishing failed: {exc}") from exc

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush and close."""
        self._producer.close(timeout=timeout_s)


def ensure_topics(
    bootstrap: str,
    topics: Sequence[str],
    *,
    partitions: int,
    like: str | None = None,
    connect_timeout_s: float = 15.0,
) -> None:
    """Create missing ``topics``; ``partitions`` 0 means as many as topic ``like`` has."""
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap.split(","),
            client_id="tierstream-admin",
            bootstrap_timeout_ms=round(connect_timeout_s * 1000),
        )
    except KafkaError as exc:
        raise _unreachable(bootstrap, exc) from None
    try:
        existing = set(admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if not missing:
            return
        count = partitions
        if count <= 0:
            count = _partition_count(admin, like) if like in existing else 1
        spec: dict[str, dict[str, Any]] = {t: {"num_partitions": count} for t in missing}
        try:
            admin.create_topics(spec, wait_for_metadata=True)
            log.info("created topics %s with %d partitions", ", ".join(missing), count)
        except TopicAlreadyExistsError:
            pass  # another instance created it first
    finally:
        admin.close()


def _partition_count(admin: KafkaAdminClient, topic: str | None) -> int:
    for info in admin.describe_topics([topic]):
        if info.get("name") == topic or info.get("topic") == topic:
            return len(info["partitions"])
    return 1


def produce_records(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes]],
    *,
    partitions: int = 1,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Produce ``(key, value)`` pairs to ``topic`` (created with ``partitions`` if missing)."""
    ensure_topics(bootstrap, [topic], partitions=partitions)
    try:
        producer = KafkaProducer(
            bootstrap_servers=bootstrap.split(","),
            acks="all",
            linger_ms=20,
            batch_size=256 * 1024,
            max_request_size=4 * 1024 * 1024,
            client_id="tierstream-generate",
        )
    except KafkaError as exc:
        raise _unreachable(bootstrap, exc) from None
    n = 0
    try:
        for key, value in records:
            producer.send(topic, key=key, value=value)
            n += 1
            if progress and n % 1000 == 0:
                progress(n)
        producer.flush()
    finally:
        producer.close()
    if progress:
        progress(n)
    return n
