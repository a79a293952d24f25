"""Records handed to kafka-python's producer without ``KafkaProducer.send``'s per-record
work, where what that work checks is known to hold.

A batch's outputs are handed to the producer one record at a time, and on a stream of
new users every event makes two (the tier change and the user's current tier): at 5,000
events a second ``send`` took more than a quarter of the service's main thread
(docs/performance.md, "Handing records to the producer"). For a record whose key and
value are bytes, whose partition is given and known to the producer's metadata, whose
headers are lists of ``(str, bytes)`` and which is far below the request size, ``send``
checks the headers, serializes nothing, validates the partition, estimates the size,
formats a debug line (``str(producer)`` for every record, logged or not) and then appends
the record to its accumulator, waking the sender thread when a batch was made or
filled. :class:`Appender` does the append and the wake-up, the same two calls; records
for which any of that is not known (no key: the producer's partitioner chooses; a value
near the request size) go through ``send``, and so does everything when the producer is
not one this module knows (another kafka-python, a transactional producer, serializers):
:func:`appender` then says None.

The accumulator is kafka-python's own: batches, sequence numbers of the idempotent
producer, retries and acknowledgements are what ``send`` would have had.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from kafka import KafkaProducer, TopicPartition

__all__ = ["Appender", "appender"]

#: The parameters kafka-python's ``RecordAccumulator.append`` starts with (3.0).
_APPEND_PARAMETERS = ("tp", "timestamp_ms", "key", "value", "headers")
#: Room left for a record's own framing and the batch header (kafka-python's estimate is
#: 61 bytes of batch header and up to 21 of record overhead, plus a header's lengths).
_FRAMING_BYTES = 1024


class Appender:
    """Appends records to one producer's accumulator (:func:`appender` makes one), each
    with its topic's headers."""

    __slots__ = ("_append", "_headers", "_limit", "_partitions", "_wakeup")

    def __init__(
        self,
        append: Any,
        wakeup: Any,
        limit: int,
        headers: Mapping[str, tuple[list[tuple[str, bytes]], int]],
    ) -> None:
        self._append = append
        self._wakeup = wakeup
        self._limit = limit
        #: Each topic's headers, checked, and their bytes.
        self._headers = dict(headers)
        self._partitions: dict[tuple[str, int], TopicPartition] = {}

    def __call__(self, topic: str, partition: int, key: bytes, value: bytes | None) -> Any:
        """The record's future, as ``send`` returns it; None when this record must go
        through ``send`` instead (a topic without known headers, or a large record)."""
        known = self._headers.get(topic)
        if known is None:
            return None
        headers, extra = known
        if len(key) + (0 if value is None else len(value)) + extra > self._limit:
            return None
        tp = self._partitions.get((topic, partition))
        if tp is None:
            tp = self._partitions[(topic, partition)] = TopicPartition(topic, partition)
        result = self._append(tp, None, key, value, headers)
        if result[1] or result[2]:  # the batch is full, or a new one was made
            self._wakeup()
        return result[0]


def appender(
    producer: KafkaProducer, headers: Mapping[str, list[tuple[str, bytes]]]
) -> Appender | None:
    """An :class:`Appender` for ``producer`` and the topics of ``headers`` (their records
    carry those headers), or None if this producer is not one it knows how to feed.

    >>> appender(object(), {}) is None
    True
    """
    try:
        config = producer.config
        append = producer._accumulator.append
        wakeup = producer._sender.wakeup
        transactions = producer._transaction_manager
    except AttributeError:
        return None
    if config.get("key_serializer") is not None or config.get("value_serializer") is not None:
        return None
    if config.get("transactional_id") is not None or (
        transactions is not None and transactions.is_transactional()
    ):
        return None
    try:
        names = tuple(inspect.signature(append).parameters)
    except (TypeError, ValueError):
        return None
    if names[: len(_APPEND_PARAMETERS)] != _APPEND_PARAMETERS:
        return None
    known = {}
    for topic, items in headers.items():
        if not isinstance(items, list) or not all(
            isinstance(item, tuple)
            and len(item) == 2
            and isinstance(item[0], str)
            and isinstance(item[1], bytes)
            for item in items
        ):
            return None
        known[topic] = (items, sum(len(k.encode()) + len(v) for k, v in items))
    limit = config.get("max_request_size", 0) - _FRAMING_BYTES
    return Appender(append, wakeup, limit, known)
