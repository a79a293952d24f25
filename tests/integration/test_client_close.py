"""A Kafka producer the service gives up on (a failed publish, a wedged send) is closed
for good: its I/O thread stops even while records are unanswered, and collecting it
later raises nothing. kafka-python's own ``close(timeout=0)`` raises in its flush first
and leaves the thread running; that producer's ``__del__`` later raised from the garbage
collector (seen after a broker was SIGKILLed under the secured-cluster test). Real broker.
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaTimeoutError

from consumer.service.client_close import close_in_background, close_quietly
from tests.integration.support import KAFKA, Names

pytestmark = pytest.mark.integration


def _holding_producer(topic: str) -> KafkaProducer:
    """A producer with records it has not had answered (they wait out a long linger),
    to a topic of its own."""
    admin = KafkaAdminClient(bootstrap_servers=KAFKA)
    try:
        admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=KAFKA, linger_ms=60_000, acks="all")
    for i in range(100):
        producer.send(topic, key=b"u%d" % i, value=b"{}")
    return producer


@pytest.fixture
def unraisable(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """What the garbage collector's finalizers raise during the test."""
    raised: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", raised.append)
    return raised


def _new_threads(before: set[threading.Thread], wait_s: float) -> list[threading.Thread]:
    deadline = time.monotonic() + wait_s
    while True:
        alive = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


@pytest.mark.parametrize("close", [close_quietly, close_in_background])
def test_a_given_up_producer_with_unanswered_records_stops_its_thread(
    names: Names, unraisable: list[Any], close: Callable[[KafkaProducer], None]
) -> None:
    before = set(threading.enumerate())
    producer = _holding_producer(names.input)
    close(producer)
    assert _new_threads(before, 15) == []
    del producer
    gc.collect()
    assert unraisable == []


def test_a_producer_whose_flush_never_completes_is_dropped_silently(
    names: Names, unraisable: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Brokers that never answer (every flush times out, even after the forced close):
    the producer is still given up without a word from the garbage collector."""
    producer = _holding_producer(names.input)

    def never(self: KafkaProducer, timeout: float | None = None) -> None:
        raise KafkaTimeoutError("Timeout waiting for future")

    monkeypatch.setattr(KafkaProducer, "flush", never)
    close_quietly(producer)
    del producer
    gc.collect()
    assert unraisable == []
