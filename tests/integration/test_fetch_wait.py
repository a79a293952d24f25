"""Records of a busy partition do not wait behind a fetch of idle ones (real broker).

kafka-python keeps one fetch in flight per broker and leaves out of it the partitions
whose records it already holds: those a poll left unreturned (more came than
``max_poll_records``), or those whose answer just arrived on its network thread. The
fetch it sends then may ask for idle partitions alone (the service reads the forget
requests' topic beside its input), and the broker holds it for ``fetch_max_wait_ms``
since nothing comes for them; records appended to the busy partitions meanwhile wait
until it returns. With kafka-python's default of 500 ms, some 1,300 records of an
instance came half a second late at once at 5,000 new users a second (docs/performance.md,
"Fetches held for idle partitions"). The service's consumer lets the broker hold a fetch
100 ms (``kafka_io.FETCH_WAIT_MS``). The first way is the one made here on purpose.
"""

from __future__ import annotations

import time

import pytest
from kafka import KafkaProducer

from consumer.service.kafka_io import EventSource, ensure_topics
from tests.integration.support import KAFKA, Names

pytestmark = pytest.mark.integration

#: More than a poll returns, so that a poll leaves records of the partition unreturned.
BURST = 3000
MAX_POLL = 2000


def _poll_for(source: EventSource, value: bytes, limit_s: float = 10.0) -> None:
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        if any(r.value == value for r in source.poll(1000)):
            return
    raise AssertionError(f"{value!r} not read within {limit_s} s")


def test_a_record_does_not_wait_behind_a_fetch_of_the_idle_topic() -> None:
    names = Names.fresh()
    ensure_topics(KAFKA, [names.input, names.forget], partitions=1)
    # One produce request a burst, so one fetch answer brings all of it.
    producer = KafkaProducer(bootstrap_servers=KAFKA, linger_ms=200, batch_size=1_000_000)
    source = EventSource(
        KAFKA, names.input, names.group, max_poll_records=MAX_POLL, also=[names.forget]
    )
    try:
        end = time.monotonic() + 3  # joined, and the fetch session past its first answer
        while time.monotonic() < end:
            source.poll(100)
        waits = []
        for burst in range(4):
            for i in range(BURST):
                producer.send(names.input, key=b"k%d" % i, value=b"x" * 10)
            producer.flush()
            first, end = source.poll(1000), time.monotonic() + 10
            while not first and time.monotonic() < end:
                first = source.poll(1000)
            rest = source.poll(0)  # the records the first poll left
            assert (len(first), len(rest)) == (MAX_POLL, BURST - MAX_POLL)
            began = time.monotonic()
            producer.send(names.input, key=b"new", value=b"new %d" % burst)
            producer.flush()
            _poll_for(source, b"new %d" % burst)
            waits.append(round(1000 * (time.monotonic() - began)))
        # 490 ms in two bursts of four with the broker holding fetches 500 ms.
        assert max(waits) < 300, waits
    finally:
        source.close()
        producer.close()
