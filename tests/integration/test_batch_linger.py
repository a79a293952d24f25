"""A batch lingers for the records that come while it waits (real broker and Redis).

With ``TIERSTREAM_BATCH_LINGER_MS``, a poll that brought records but fewer than
``max_poll_records`` is followed by more polls until the linger is over, and the batch
takes what they bring (``Service._poll``): records that arrive one by one, 40 ms apart,
are one batch instead of one each, and no batch holds more than ``max_poll_records``.
The polls of a linger leave the forget requests' partitions out of their fetch
(``EventSource.poll(input_only=True)``); a request sent meanwhile is forwarded all the
same. A stop does not wait a linger out: the batch runs with what came.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer

from consumer.service import checkpoint
from consumer.service.kafka_io import EventSource, ensure_topics
from consumer.service.loop import Service
from consumer.service.settings import Settings
from tests.integration.support import KAFKA, Names, end_offsets

pytestmark = pytest.mark.integration

#: The service runs on a thread of the test's process: the watchdog a stop starts must
#: not end the process (``Service.stop``; a stop that overran is the chaos suite's).
SHUTDOWN = {"TIERSTREAM_SHUTDOWN_TIMEOUT_S": "86400"}
#: Records sent one by one after the warm-up, each flushed, this far apart.
SPACED = 8
APART_S = 0.04


def _event(user: str) -> bytes:
    return orjson.dumps(
        {
            "event_id": f"e-{user}",
            "user_id": user,
            "event_type": "page_view",
            "timestamp": 1767225600000,
        }
    )


FORGET_U0 = orjson.dumps(
    {
        "tierstream_control": "forget",
        "user_id": "u0",
        "request_id": "linger-test",
        "requested_at": "2026-01-05T10:00:00.000Z",
    }
)


@pytest.fixture
def batch_sizes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The records of each batch the service runs, in order."""
    sizes: list[int] = []
    run_batch = checkpoint.Checkpoint.run_batch

    def counted(self: checkpoint.Checkpoint, records: list[Any], *args: Any, **kw: Any) -> Any:
        sizes.append(len(records))
        return run_batch(self, records, *args, **kw)

    monkeypatch.setattr(checkpoint.Checkpoint, "run_batch", counted)
    yield sizes


def _wait(done: Callable[[], object], what: str, limit_s: float = 60.0) -> None:
    end = time.monotonic() + limit_s
    while not done():
        if time.monotonic() > end:
            raise AssertionError(f"{what} within {limit_s} s")
        time.sleep(0.02)


@dataclass
class _Running:
    """The service on a thread of the test's own, and a producer to its topics."""

    service: Service
    producer: KafkaProducer
    #: After the stop: how long the service's thread took to end, whether it did.
    stop_s: float = 0.0
    ended: bool = False


@contextlib.contextmanager
def _running(names: Names, **env: str) -> Iterator[_Running]:
    """The service with these settings, on input and forget topics of one partition;
    stopped and joined after."""
    ensure_topics(KAFKA, [names.input, names.forget], partitions=1)
    service = Service(Settings.from_env(names.env(**env, **SHUTDOWN)))
    runner = threading.Thread(target=service.run, name="service")
    run = _Running(service, KafkaProducer(bootstrap_servers=KAFKA, linger_ms=0))
    runner.start()
    try:
        yield run
    finally:
        service.stop()
        began = time.monotonic()
        runner.join(60)
        run.stop_s, run.ended = time.monotonic() - began, not runner.is_alive()
        run.producer.close()


@pytest.mark.parametrize(
    ("linger_ms", "max_poll"), [(0, 2000), (2000, 2000), (2000, 3)], ids=["off", "on", "bounded"]
)
def test_records_that_come_while_a_batch_lingers_join_it(
    batch_sizes: list[int], linger_ms: int, max_poll: int
) -> None:
    names = Names.fresh()
    with _running(
        names,
        TIERSTREAM_BATCH_LINGER_MS=str(linger_ms),
        TIERSTREAM_MAX_POLL_RECORDS=str(max_poll),
    ) as run:
        producer = run.producer
        producer.send(names.input, key=b"warm", value=_event("warm")).get(30)
        _wait(lambda: sum(batch_sizes) == 1, "the warm-up event not read")
        time.sleep(0.5)  # the warm-up batch done, the service waiting in its poll
        for i in range(SPACED):
            producer.send(names.input, key=b"u%d" % i, value=_event(f"u{i}")).get(30)
            if i == SPACED // 2:  # a request while the batch lingers: forwarded all the same
                producer.send(names.forget, key=b"u0", value=FORGET_U0)
                producer.flush()
            time.sleep(APART_S)
        # the spaced events and the forwarded request, read into batches
        _wait(lambda: sum(batch_sizes) == 1 + SPACED + 1, "not every record read")
    spaced = batch_sizes[1:]
    assert sum(end_offsets(names.input).values()) == 1 + SPACED + 1  # the request forwarded
    if linger_ms == 0:  # one batch per event or so: each came on its own
        assert len(spaced) >= SPACED // 2, spaced
    elif max_poll == 3:
        assert max(spaced) <= 3 and len(spaced) <= 5, spaced
    else:  # the spaced events in one batch, the request forwarded after them in another
        assert spaced[0] == SPACED, spaced


def test_an_input_only_poll_leaves_the_other_topics_to_the_next_poll() -> None:
    """The polls of a linger pause the forget requests' partitions for their fetch, and
    only for it: a request is read by the next plain poll."""
    names = Names.fresh()
    ensure_topics(KAFKA, [names.input, names.forget], partitions=1)
    producer = KafkaProducer(bootstrap_servers=KAFKA, linger_ms=0)
    source = EventSource(KAFKA, names.input, names.group, max_poll_records=100, also=[names.forget])
    try:
        end = time.monotonic() + 3  # joined, both partitions assigned
        while time.monotonic() < end:
            source.poll(100)
        producer.send(names.forget, key=b"u0", value=FORGET_U0)
        producer.send(names.input, key=b"u1", value=_event("u1"))
        producer.flush()
        lingered: list[str] = []
        end = time.monotonic() + 2
        while time.monotonic() < end:
            lingered += [r.topic for r in source.poll(100, max_records=50, input_only=True)]
        assert lingered == [names.input]
        after: list[str] = []

        def polled() -> bool:
            after.extend(r.topic for r in source.poll(100))
            return bool(after)

        _wait(polled, "the request not read by a plain poll")
        assert after == [names.forget]
    finally:
        source.close()
        producer.close()


def test_a_stop_ends_a_linger_with_the_batch_as_it_is(
    batch_sizes: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop (SIGTERM) does not wait out a long linger: the batch runs with what came."""
    brought: list[int] = []
    poll = EventSource.poll

    def noted(self: EventSource, *args: Any, **kw: Any) -> list[Any]:
        got = poll(self, *args, **kw)
        brought.append(len(got))
        return got

    monkeypatch.setattr(EventSource, "poll", noted)
    names = Names.fresh()
    with _running(names, TIERSTREAM_BATCH_LINGER_MS="120000") as run:
        registry = run.service.metrics.registry
        owned = "tierstream_assigned_partitions"
        _wait(lambda: registry.get_sample_value(owned) == 1, "the partition not acquired")
        run.producer.send(names.input, key=b"u1", value=_event("u1")).get(30)
        _wait(lambda: sum(brought) == 1, "the event not polled")
        time.sleep(0.3)  # lingering
        assert batch_sizes == []
    assert run.ended
    assert run.stop_s < 10
    assert batch_sizes == [1]
