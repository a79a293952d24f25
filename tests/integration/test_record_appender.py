"""The publisher hands records to kafka-python's accumulator itself where it can
(:mod:`consumer.service.record_appender`), and what reaches the topics is what
``KafkaProducer.send`` would have put there: the same partitions, headers, keys, values
and order; the records it cannot take (no key, no known headers, near the request size)
go through ``send``. Real broker."""

from __future__ import annotations

import pytest
from kafka import KafkaProducer
from kafka.serializer import Serializer

from consumer.service.errors import PublishError
from consumer.service.kafka_io import Publisher, ensure_topics
from consumer.service.partitioning import key_partition
from consumer.service.record_appender import appender
from consumer.service.records import OutputRecord
from tests.integration.support import KAFKA, Names, read_topic_with_headers

pytestmark = pytest.mark.integration


class _Copy(Serializer):  # type: ignore[misc]
    def serialize(self, topic: str, value: bytes) -> bytes:
        return bytes(value)


_HEADERS = [("content-type", b"application/json"), ("tierstream-schema", b"tier-change.v4")]


def test_the_installed_kafka_python_is_fed_directly() -> None:
    """If a kafka-python release moves what the appender uses, every record would go
    through ``send`` again, a quarter of the main thread at 5,000 new users a second:
    this says so instead of letting it pass unnoticed."""
    producer = KafkaProducer(bootstrap_servers=KAFKA)
    try:
        assert appender(producer, {"t": _HEADERS}) is not None
        serializing = KafkaProducer(bootstrap_servers=KAFKA, value_serializer=_Copy())
        try:
            assert appender(serializing, {"t": _HEADERS}) is None  # send would serialize
        finally:
            serializing.close()
    finally:
        producer.close()
    publisher = Publisher(KAFKA, headers={"t": _HEADERS})
    try:
        assert publisher._append is not None
    finally:
        publisher.close()


def test_records_reach_the_topics_as_send_would_put_them(names: Names) -> None:
    ensure_topics(KAFKA, [names.output, names.dlq, names.tiers], partitions=3)
    headers = {names.output: _HEADERS, names.tiers: [("tierstream-schema", b"user-tier.v1")]}
    big = b"x" * (1024 * 1024 - 600)  # within the request size, too near it to append
    records = [
        *(OutputRecord(names.output, f"u{i}".encode(), b'{"n": %d}' % i) for i in range(300)),
        OutputRecord(names.tiers, b"gone", None),  # a tombstone, appended
        OutputRecord(names.tiers, b"vip", b'{"tier": "vip"}'),
        OutputRecord(names.dlq, None, b"no key: the producer's partitioner"),
        OutputRecord(names.dlq, b"dead", b"a topic without headers: send"),
        OutputRecord(names.output, b"big", big),
        OutputRecord(names.output, b"after", b'{"after": "the big one"}'),
    ]
    publisher = Publisher(KAFKA, max_request_size=1024 * 1024, headers=headers)
    appended = []
    real = publisher._append
    assert real is not None

    def spy(topic: str, partition: int, key: bytes, value: bytes | None) -> object:
        future = real(topic, partition, key, value)
        appended.append((key, future is not None))
        return future

    publisher._append = spy  # type: ignore[assignment]
    try:
        publisher.publish(records)
    finally:
        publisher.close()
    taken = dict(appended)
    assert all(taken[f"u{i}".encode()] for i in range(300))
    assert taken[b"gone"] and taken[b"vip"] and taken[b"after"]
    assert not taken[b"big"]  # near the request size: through send
    assert not taken[b"dead"]  # no headers known for the topic: through send

    for topic in (names.output, names.tiers, names.dlq):
        sent = [r for r in records if r.topic == topic]
        got = read_topic_with_headers(topic)
        assert sorted((r.key or b"", r.value or b"") for r, _ in got) == sorted(
            (r.key or b"", r.value or b"") for r in sent
        )
        for rec, got_headers in got:
            assert got_headers == headers.get(topic, []), (topic, got_headers)
            if rec.key is not None:  # where Kafka's default partitioner puts it
                assert rec.partition == key_partition(rec.key, 3)
        for p in range(3):  # a partition's keyed records in the order they were sent
            read = [
                r.value
                for r, _ in sorted(got, key=lambda g: g[0].offset)
                if r.partition == p and r.key is not None
            ]
            assert read == [r.value for r in sent if r.key and key_partition(r.key, 3) == p]


def test_a_record_over_the_request_size_is_refused_as_before(names: Names) -> None:
    ensure_topics(KAFKA, [names.output], partitions=1)
    publisher = Publisher(KAFKA, max_request_size=64 * 1024, headers={names.output: _HEADERS})
    try:
        with pytest.raises(PublishError, match="MessageSizeTooLarge"):
            publisher.publish([OutputRecord(names.output, b"u1", b"x" * 70_000)])
    finally:
        publisher.close()
