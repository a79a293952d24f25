"""``tierstream dlq purge USER_ID...``: remove a user's records from the DLQ topic.

Kafka deletes records only from the start of a partition (``DeleteRecords``). So, for
each DLQ partition holding records of the users, the purge reads the partition to its
end offset ``E``, copies every *other* record to the end of the same partition (same key,
same value: a DLQ record carries its source coordinates, so its new offset loses
nothing), then deletes everything before ``E``. Records the service appends meanwhile
stay; the copies land after them. The DLQ's retention (``retention.ms``) bounds how long
a record stays in any case.

A DLQ record is a user's when its key is the user id, or when the original record it
carries is a JSON object whose ``user_id`` is the user (records keyed by another id).

>>> import base64, orjson
>>> body = {"key_b64": None, "value_b64": base64.b64encode(b'{"user_id": "u1"}').decode()}
>>> belongs_to(None, orjson.dumps(body), {"u1"}), belongs_to(b"u2", orjson.dumps(body), {"u3"})
(True, False)
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Set
from dataclasses import dataclass, field

import orjson
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from consumer.service.acked_sends import AckedSends
from consumer.service.errors import BrokerUnavailable
from consumer.service.kafka_connection import KafkaConnection


def belongs_to(key: bytes | None, value: bytes | None, users: Set[str]) -> bool:
    """Whether the DLQ record (``key``, ``value``) is one of ``users``'."""
    if key is not None and key.decode("utf-8", "replace") in users:
        return True
    try:
        body = orjson.loads(value or b"")
        original = orjson.loads(base64.b64decode(body.get("value_b64") or ""))
    except (orjson.JSONDecodeError, binascii.Error, AttributeError, TypeError, ValueError):
        return False
    return isinstance(original, dict) and original.get("user_id") in users


@dataclass
class PurgeResult:
    """What a purge did, per partition: records removed and records copied forward."""

    removed: dict[int, int] = field(default_factory=dict)
    copied: dict[int, int] = field(default_factory=dict)


def purge(
    kafka: KafkaConnection | str,
    topic: str,
    users: Set[str],
    *,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
) -> PurgeResult:
    """Remove ``users``' records from every partition of ``topic`` (see the module)."""
    kafka = KafkaConnection.of(kafka)
    try:
        consumer = KafkaConsumer(**kafka.config(KafkaConsumer, enable_auto_commit=False))
    except KafkaError as exc:
        raise BrokerUnavailable(f"cannot reach Kafka at {kafka.describe()} ({exc})") from None
    result = PurgeResult()
    try:
        parts = sorted(consumer.partitions_for_topic(topic) or ())
        tps = [TopicPartition(topic, p) for p in parts]
        ends = consumer.end_offsets(tps)
        firsts = consumer.beginning_offsets(tps)
        plan: dict[TopicPartition, list[tuple[bytes | None, bytes | None]]] = {}
        read = 0
        for tp in tps:
            if ends[tp] <= firsts[tp]:
                continue
            keep, removed = [], 0
            for key, value in _read(consumer, tp, ends[tp]):
                read += 1
                if progress and read % 1000 == 0:
                    progress(read)
                if belongs_to(key, value, users):
                    removed += 1
                else:
                    keep.append((key, value))
            if removed:
                plan[tp] = keep
                result.removed[tp.partition] = removed
                result.copied[tp.partition] = len(keep)
    finally:
        consumer.close()
    if plan and not dry_run:
        _rewrite(kafka, topic, plan, ends)
    return result


def _read(
    consumer: KafkaConsumer, tp: TopicPartition, end: int
) -> list[tuple[bytes | None, bytes | None]]:
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    out: list[tuple[bytes | None, bytes | None]] = []
    while consumer.position(tp) < end:
        for records in consumer.poll(timeout_ms=1000).values():
            out.extend((r.key, r.value) for r in records if r.offset < end)
    return out


def _rewrite(
    kafka: KafkaConnection,
    topic: str,
    plan: dict[TopicPartition, list[tuple[bytes | None, bytes | None]]],
    ends: dict[TopicPartition, int],
) -> None:
    """Copy the kept records forward (``plan``: partitions of ``topic``), then delete each
    partition up to its old end: only once the brokers acknowledged every copy
    (NotAcknowledged, and nothing deleted, if they do not; a run again copies again)."""
    sends = AckedSends(
        lambda: KafkaProducer(**kafka.config(KafkaProducer, acks="all", enable_idempotence=True)),
        topic,
    )
    try:
        for tp, keep in plan.items():
            for key, value in keep:
                sends.send(key, value, tp.partition)
        sends.finish()
    finally:
        sends.close()
    admin = KafkaAdminClient(**kafka.config(KafkaAdminClient))
    try:
        admin.delete_records({tp: ends[tp] for tp in plan})
    finally:
        admin.close()
