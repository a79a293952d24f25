"""Which input partition a user lives in, and the partition count the state was written
for.

A record is keyed by its user id (the decoder refuses any other key), and Kafka's default
partitioner routes a key to ``(murmur2(key) & 0x7fffffff) % partitions``: the same user
always lands in the same partition, and the service keeps the user's state in that
partition's Redis slot (:mod:`consumer.service.keys`). The batch step knows a user's
partition from the record; a tool that reads one user (``inspect``) computes it here, from
the partition count stored with the state.

>>> partition_of("u000001", 2), partition_of("u000001", 4), partition_of("u000001", 1)
(1, 3, 0)

The count is recorded when the state is first written. A topic that has grown since is
refused, with one line, until ``tierstream state repartition`` has moved the users:

>>> from consumer.service.state_store import MemoryStateStore
>>> store = MemoryStateStore()
>>> check_partition_count(store, "user-events", 2, prefix="ts")
>>> check_partition_count(store, "user-events", 4, prefix="ts")
Traceback (most recent call last):
...
consumer.service.errors.PartitionCountChanged: the input topic user-events has 4 partitions, ...
"""

from __future__ import annotations

from typing import Protocol, cast

from kafka.partitioner.default import murmur2

from consumer.service.errors import PartitionCountChanged

__all__ = [
    "PartitionRegistry",
    "check_partition_count",
    "key_hash",
    "key_partition",
    "partition_of",
]


def partition_of(user_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner (Java's, and kafka-python's) gives a
    record keyed by ``user_id`` (UTF-8) on a topic of ``partitions`` partitions."""
    return key_partition(user_id.encode(), partitions)


def key_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a record whose key is ``key`` on a
    topic of ``partitions`` partitions (numbered from 0).

    >>> key_partition(b"u000001", 4) == partition_of("u000001", 4)
    True
    """
    return key_hash(key) % partitions


def key_hash(key: bytes) -> int:
    """The non-negative murmur2 hash of ``key`` that Kafka's default partitioner takes
    modulo the partition count."""
    return cast(int, murmur2(key)) & 0x7FFFFFFF


class PartitionRegistry(Protocol):
    """Where the partition counts are kept (the state store)."""

    def record_partition_count(self, topic: str, partitions: int) -> int:
        """Record ``partitions`` for ``topic`` unless a count is recorded; return the
        recorded count."""
        ...


def check_partition_count(
    store: PartitionRegistry, topic: str, partitions: int, *, prefix: str
) -> None:
    """Record the topic's partition count with the state the first time; afterwards,
    raise PartitionCountChanged if Kafka's count is not the recorded one."""
    recorded = store.record_partition_count(topic, partitions)
    if recorded != partitions:
        raise PartitionCountChanged(
            f"the input topic {topic} has {partitions} partitions, but the state under key "
            f"prefix {prefix!r} was written for {recorded}: users would be looked for in the "
            "wrong partition. Stop every instance, then run `tierstream state repartition` "
            "(docs/runbook.md)"
        )
