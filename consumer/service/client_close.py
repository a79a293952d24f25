"""Closing a Kafka client that failed or is given up: it is dropped whatever happens.

A wedged client's close may wedge too, so the caller that must not wait closes it on a
thread of its own (:func:`close_in_background`). A producer is closed at once
(``timeout=0``: what it still holds is abandoned, the caller sends it again), a consumer
without committing.
"""

from __future__ import annotations

import logging
import threading
from typing import TypeAlias

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

log = logging.getLogger(__name__)
Client: TypeAlias = KafkaConsumer | KafkaProducer | KafkaAdminClient


def close_quietly(client: Client) -> None:
    """Close ``client`` now; a failure to close is logged at debug level only."""
    try:
        if isinstance(client, KafkaConsumer):
            client.close(autocommit=False)
        elif isinstance(client, KafkaProducer):
            client.close(timeout=0)
        else:
            client.close()
    except Exception:  # a broken client may fail to close; it is dropped anyway
        log.debug("closing a failed Kafka client", exc_info=True)


def close_in_background(client: Client, name: str = "closing a Kafka client") -> None:
    """:func:`close_quietly` on a daemon thread, without waiting for it."""
    threading.Thread(target=close_quietly, args=(client,), name=name, daemon=True).start()
