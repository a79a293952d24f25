"""Closing a Kafka client that failed or is given up: it is dropped whatever happens.

A wedged client's close may wedge too, so the caller that must not wait closes it on a
thread of its own (:func:`close_in_background`). A producer is closed without sending
what it still holds (the caller sends it again), a consumer without committing.

kafka-python's ``KafkaProducer.close(timeout=0)`` flushes first and raises
``KafkaTimeoutError`` while a batch is still unanswered, before it stops its I/O thread:
the producer then lives on, its thread still sending, and its ``__del__`` raises the
same error from the garbage collector. :func:`close_quietly` stops that thread without
sending (the producer's own forced close) and closes the producer once it has stopped (or,
if it has not within :data:`SENDER_STOP_S`, marks it closed all the same: the thread ends
after its current network call, and the collector has nothing left to flush).
"""

from __future__ import annotations

import logging
import threading
from typing import TypeAlias

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaTimeoutError

log = logging.getLogger(__name__)
Client: TypeAlias = KafkaConsumer | KafkaProducer | KafkaAdminClient

#: How long a given-up producer's I/O thread may take to stop after a forced close (it
#: stops after its current poll of the network).
SENDER_STOP_S = 10.0


def close_quietly(client: Client) -> None:
    """Close ``client`` now; a failure to close is logged at debug level only.

    A producer's unanswered records are abandoned; this returns once its I/O thread
    has stopped (at most :data:`SENDER_STOP_S`)."""
    try:
        if isinstance(client, KafkaConsumer):
            client.close(autocommit=False)
        elif isinstance(client, KafkaProducer):
            _close_producer(client)
        else:
            client.close()
    except Exception:  # a broken client may fail to close; it is dropped anyway
        log.debug("closing a failed Kafka client", exc_info=True)


def _close_producer(producer: KafkaProducer) -> None:
    # kafka-python's close(timeout=0) would force-close the thread itself, but only after
    # a flush, which raises while a batch is unanswered: force it first (kafka-python has
    # no public forced close), so the flush finds every batch failed.
    sender = getattr(producer, "_sender", None)
    if sender is not None:
        sender.force_close()  # fails the unanswered batches, then the thread ends
        sender.join(SENDER_STOP_S)
    try:
        producer.close(timeout=0)
    except KafkaTimeoutError:
        # Its thread did not stop in time (it stops after its current network call): it
        # is on its way out; the producer must not try again from the garbage collector.
        producer._closed = True
        raise


def close_in_background(client: Client, name: str = "closing a Kafka client") -> None:
    """:func:`close_quietly` on a daemon thread, without waiting for it."""
    threading.Thread(target=close_quietly, args=(client,), name=name, daemon=True).start()
