"""Erasure requests, from the forget topic into the input topic.

An erasure pipeline (or ``tierstream forget``) sends forget requests
(``schemas/forget-request.v1.json``) to the forget topic. Erasing a user where the
request happens to be read would race with the user's events still waiting in the input
partition: an event produced before the request but read after it would bring the user
back. So the service forwards each request, unchanged, into the input topic keyed by the
user id: it lands in the user's own partition, after every event of theirs already
there, and the partition's owner applies it in that order (:mod:`consumer.service.batch`).
A replay of the input topic meets the erasure at the same place, too.

Forwarding is at least once (publish, then commit): a request forwarded twice erases an
already erased user, which changes nothing. A request that is not one (bad JSON, a key
that is not its user id) goes to the DLQ with its reason.

Forget requests have a consumer group of their own (``<group>.forget``): any instance
may forward any request, so this needs no partitioning of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from consumer.service.dead_letters import dead_letter
from consumer.service.errors import BrokerError
from consumer.service.kafka_io import Publisher
from consumer.service.records import InputRecord, OutputRecord
from online_models.erasure import ForgetRequest
from schemas.decode import EventDecoder, Rejection, key_rejection

log = logging.getLogger(__name__)
#: How long one look at the forget topic may wait for requests.
POLL_MS = 50


def forwarded(
    records: Sequence[InputRecord],
    decoder: EventDecoder,
    *,
    input_topic: str,
    dlq_topic: str,
    dlq_max_copy_bytes: int,
) -> list[OutputRecord]:
    """What to publish for ``records`` read from the forget topic: each valid request
    into the input topic, keyed by its user; anything else to the DLQ.

    >>> good = b'{"tierstream_control":"forget","user_id":"u1","request_id":"r",' \\
    ...        b'"requested_at":"2026-05-01T00:00:00Z"}'
    >>> recs = [InputRecord("forget", 0, 0, None, b"u1", good),
    ...         InputRecord("forget", 0, 1, None, b"u1", b'{"user_id": "u1"}')]
    >>> [(o.topic, o.key) for o in forwarded(recs, EventDecoder(), input_topic="in",
    ...                                      dlq_topic="dlq", dlq_max_copy_bytes=1024)]
    [('in', b'u1'), ('dlq', b'u1')]
    """
    out = []
    for rec in records:
        result = decoder.decode(rec.value)
        if isinstance(result, ForgetRequest):
            rejection = key_rejection(rec.key, result.user_id)
            if rejection is None:
                out.append(OutputRecord(input_topic, rec.key, rec.value or b""))
                continue
            result = rejection
        elif not isinstance(result, Rejection):
            result = Rejection("invalid", "an event, not a forget request (no tierstream_control)")
        out.append(dead_letter(rec, result, dlq_topic, max_copy_bytes=dlq_max_copy_bytes))
    return out


class ForgetForwarder:
    """Reads the forget topic in its own consumer group and forwards each request."""

    def __init__(
        self,
        bootstrap: str,
        *,
        forget_topic: str,
        input_topic: str,
        dlq_topic: str,
        group_id: str,
        publisher: Publisher,
        dlq_max_copy_bytes: int,
        connect_timeout_s: float = 15.0,
    ) -> None:
        self.input_topic = input_topic
        self.dlq_topic = dlq_topic
        self.publisher = publisher
        self.dlq_max_copy_bytes = dlq_max_copy_bytes
        self.decoder = EventDecoder()
        try:
            self._consumer = KafkaConsumer(
                forget_topic,
                bootstrap_servers=bootstrap.split(","),
                group_id=f"{group_id}.forget",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=500,
                session_timeout_ms=10_000,
                heartbeat_interval_ms=3_000,
                client_id=f"tierstream-{group_id}-forget",
                bootstrap_timeout_ms=round(connect_timeout_s * 1000),
            )
        except KafkaError as exc:
            raise BrokerError(f"reading {forget_topic}: {exc}") from exc

    def pump(self, timeout_ms: int = POLL_MS) -> int:
        """Forward what the forget topic holds now; how many requests."""
        try:
            # Not 0: the consumer joins its group and fetches only while it polls.
            batches = self._consumer.poll(timeout_ms=timeout_ms)
        except KafkaError as exc:
            raise BrokerError(f"reading forget requests: {exc}") from exc
        records = [
            InputRecord(tp.topic, tp.partition, r.offset, r.timestamp, r.key, r.value)
            for tp, rs in batches.items()
            for r in rs
        ]
        if not records:
            return 0
        outputs = forwarded(
            records,
            self.decoder,
            input_topic=self.input_topic,
            dlq_topic=self.dlq_topic,
            dlq_max_copy_bytes=self.dlq_max_copy_bytes,
        )
        self.publisher.publish(outputs)
        try:
            self._consumer.commit()
        except KafkaError as exc:  # forwarded again next time: erasing twice is harmless
            raise BrokerError(f"committing forget requests: {exc}") from exc
        n = sum(o.topic == self.input_topic for o in outputs)
        log.info("forwarded %d forget requests into %s", n, self.input_topic)
        return len(records)

    def lag(self, timeout_s: float = 5.0) -> int:
        """Requests on the forget topic not yet forwarded (by any instance)."""
        timeout_ms = round(timeout_s * 1000)
        try:
            topic = next(iter(self._consumer.subscription() or ()), None)
            parts = sorted(self._consumer.partitions_for_topic(topic) or ()) if topic else []
            tps = [TopicPartition(topic, p) for p in parts]
            if not tps:
                return 0
            ends = self._consumer.end_offsets(tps, timeout_ms=timeout_ms)
            firsts = self._consumer.beginning_offsets(tps, timeout_ms=timeout_ms)
            total = 0
            for tp in tps:
                committed = self._consumer.committed(tp, timeout_ms=timeout_ms)
                total += max(0, ends[tp] - (firsts[tp] if committed is None else committed))
        except KafkaError as exc:
            raise BrokerError(f"reading the forget topic's lag: {exc}") from exc
        return total

    def close(self) -> None:
        """Leave the group."""
        self._consumer.close(autocommit=False)
