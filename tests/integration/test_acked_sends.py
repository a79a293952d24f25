"""What the project's commands send to Kafka (`tierstream generate --topic`, `tierstream
forget`, through ``produce_records``) is acknowledged record by record: a record the
brokers refuse is an error, not a silent drop, and records a producer holds without
delivering them (as kafka-python's can after a partition's leader died) are sent again
by a new producer instead of being lost or waited on forever. Real broker."""

from __future__ import annotations

from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka.future import Future

from consumer.service.errors import NotAcknowledged
from consumer.service.kafka_io import produce_records
from tests.integration.support import KAFKA, Names, end_offsets

pytestmark = pytest.mark.integration


def test_a_record_the_brokers_refuse_is_an_error_not_a_silent_drop(names: Names) -> None:
    admin = KafkaAdminClient(bootstrap_servers=KAFKA)
    try:
        admin.create_topics(
            [NewTopic(names.input, 1, 1, topic_configs={"max.message.bytes": "300"})]
        )
    finally:
        admin.close()
    records = [(b"u1", b"{}"), (b"u2", b"x" * 2_000), (b"u3", b"{}")]
    # The idempotent producer aborts its other batches after the fatal error, so the
    # record after the large one may be refused with it.
    refused = rf"the brokers refused [12] of 3 records sent to {names.input}: .*MessageSizeTooLarge"
    with pytest.raises(NotAcknowledged, match=refused):
        produce_records(KAFKA, names.input, records, timeout_s=60)


def test_records_a_producer_holds_are_sent_again_by_a_new_one(
    names: Names, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The first producer takes every record and never answers (a dead leader's batches
    held past the producer's own delivery timeout); the records reach the topic through
    a second one, each once."""
    real_send = KafkaProducer.send
    holders: list[KafkaProducer] = []

    def send(self: KafkaProducer, topic: str, *args: Any, **kwargs: Any) -> Any:
        if not holders:
            holders.append(self)
        if self is holders[0]:
            return Future()  # never answered
        return real_send(self, topic, *args, **kwargs)

    monkeypatch.setattr(KafkaProducer, "send", send)
    records = [(f"u{i}".encode(), b'{"n": %d}' % i) for i in range(500)]
    n = produce_records(KAFKA, names.input, records, partitions=2, resend_after_s=3)
    assert n == 500
    assert sum(end_offsets(names.input).values()) == 500
    assert "500 records sent to" in caplog.text and "sending them again" in caplog.text


def test_a_record_over_the_producers_request_limit_is_refused_with_the_others_sent(
    names: Names,
) -> None:
    """kafka-python refuses a record larger than its ``max_request_size`` in ``send``
    itself: one line naming it, not a traceback; the records around it are delivered."""
    records = [(b"u1", b"{}"), (b"u2", b"x" * (5 * 1024 * 1024)), (b"u3", b"{}")]
    with pytest.raises(NotAcknowledged, match=r"refused 1 of 3 records .*MessageSizeTooLarge"):
        produce_records(KAFKA, names.input, records, timeout_s=60)
    assert sum(end_offsets(names.input).values()) == 2
