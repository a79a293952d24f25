"""Records sent to one Kafka topic and kept until the brokers acknowledge each one.

kafka-python's producer can fail the batches of a partition whose leader died, or hold
them past its own delivery timeout (its ``flush()`` then never returns): seen with a
broker SIGKILLed under a producer sending at a steady rate. A caller that sends and
flushes without looking at each record's future loses those records without a word, or
waits forever. :class:`AckedSends` keeps every record until its acknowledgement comes;
:meth:`AckedSends.finish` waits a bounded time, sends what is left again with a new
producer (as the service's outbox publisher does), and raises
:class:`~consumer.service.errors.NotAcknowledged` when the brokers refuse a record for
good or the deadline passes. A record whose acknowledgement was lost may be written
twice: events carry ids, and the service drops the copy.

Only what is not yet acknowledged is kept, so memory stays flat however many records a
run sends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError

from consumer.service.client_close import close_in_background
from consumer.service.errors import NotAcknowledged

log = logging.getLogger(__name__)


class AckedSends:
    """Send ``(key, value)`` records to ``topic`` through producers from ``new_producer``;
    :meth:`finish` returns once every record is acknowledged."""

    def __init__(
        self,
        new_producer: Callable[[], KafkaProducer],
        topic: str,
        *,
        on_ack: Callable[[], None] | None = None,
    ) -> None:
        self.topic = topic
        self._new = new_producer
        self._on_ack = on_ack
        self._producer: KafkaProducer | None = new_producer()
        #: The producer's network thread answers while the caller sends and waits.
        self._lock = threading.Lock()
        #: Every record sent and not acknowledged yet, by a number of its own (a resent
        #: record gets a new one: a late answer to the old send must not count for it).
        self._waiting: dict[int, tuple[bytes | None, bytes | None, int | None]] = {}
        self._refused: dict[int, KafkaError] = {}
        self._numbers = 0
        #: Records sent (each once, however often it was resent).
        self.sent = 0
        #: Acknowledgements received.
        self.acknowledged = 0
        #: Records sent again by a new producer.
        self.resent = 0

    def send(self, key: bytes | None, value: bytes | None, partition: int | None = None) -> None:
        """Hand one record to the producer (returns before it is acknowledged); to
        ``partition`` if given, else where the producer's partitioner puts its key."""
        self.sent += 1
        self._send(key, value, partition)

    def _send(self, key: bytes | None, value: bytes | None, partition: int | None) -> None:
        if self._producer is None:
            self._producer = self._new()
        with self._lock:
            n = self._numbers
            self._numbers += 1
            self._waiting[n] = (key, value, partition)
        try:
            future = self._producer.send(self.topic, key=key, value=value, partition=partition)
        except KafkaError as exc:  # refused at once (too large), or the producer is stuck
            self._failed(n, exc)  # kept waiting: refused, or sent again by a new producer
            return
        future.add_callback(self._acked, n)
        future.add_errback(self._failed, n)

    def _acked(self, n: int, _metadata: Any) -> None:
        with self._lock:
            if self._waiting.pop(n, None) is None:
                return
            self.acknowledged += 1
        if self._on_ack is not None:
            self._on_ack()

    def _failed(self, n: int, error: Exception) -> None:
        if isinstance(error, KafkaError) and not error.retriable:
            with self._lock:
                self._refused[n] = error

    def finish(self, timeout_s: float = 300.0, *, resend_after_s: float = 30.0) -> None:
        """Wait until every record sent is acknowledged: what the producer has not
        delivered ``resend_after_s`` after it was handed over is sent again by a new one,
        until ``timeout_s``. NotAcknowledged if a record is refused for good (too large,
        not authorised) or the deadline passes."""
        deadline = time.monotonic() + timeout_s
        round_start = time.monotonic()
        while True:
            now = time.monotonic()
            wait = max(0.05, min(round_start + resend_after_s, deadline) - now)
            if self._producer is not None:
                try:
                    self._producer.flush(timeout=wait)
                except KafkaTimeoutError:
                    pass
                except KafkaError as exc:  # e.g. a batch split after MessageSizeTooLarge
                    log.debug("flushing records to %s: %s", self.topic, exc)
                    time.sleep(0.05)
            with self._lock:
                refused = {n: e for n, e in self._refused.items() if n in self._waiting}
                left = [self._waiting[n] for n in sorted(self._waiting)]
            if refused:
                error = next(iter(refused.values()))
                raise NotAcknowledged(
                    f"the brokers refused {len(refused)} of {self.sent} records sent to "
                    f"{self.topic}: {error}"
                )
            if not left:
                return
            now = time.monotonic()
            if now >= deadline:
                raise NotAcknowledged(
                    f"{len(left)} of {self.sent} records sent to {self.topic} were "
                    f"not acknowledged within {timeout_s:g} s: are the brokers up? Run it "
                    "again (a record written twice is dropped by its event id)"
                )
            if now - round_start < resend_after_s:
                time.sleep(0.05)  # the producer has nothing left to flush: answers to come
                continue
            log.warning(
                "%d records sent to %s not acknowledged after %g s; sending them again with "
                "a new producer",
                len(left),
                self.topic,
                resend_after_s,
            )
            self._drop()
            with self._lock:
                self._waiting.clear()
            self.resent += len(left)
            for key, value, partition in left:
                self._send(key, value, partition)
            round_start = time.monotonic()

    def _drop(self) -> None:
        """Close the producer without waiting, on a thread of its own (a wedged
        producer's close may wedge too); its late answers no longer count."""
        producer, self._producer = self._producer, None
        if producer is not None:
            close_in_background(producer, "closing a producer")

    def close(self) -> None:
        """Close the producer (after :meth:`finish`, nothing is left in it)."""
        self._drop()
