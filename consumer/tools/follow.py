"""``tierstream follow`` on Kafka: bootstrap a :class:`~consumer.tools.follower.Follower`
from the current-tier topic, then follow the change topic.

The change topic's end offsets are noted *before* the current-tier topic is read, and
the changes are followed from there: a change published meanwhile is in the bootstrap
already and is skipped by its ``seq``, and none falls between the two reads.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from consumer.service.errors import BrokerUnavailable
from consumer.service.kafka_connection import KafkaConnection
from consumer.tools.follower import Follower, Outcome

#: How long a poll waits for records.
POLL_MS = 500


@dataclass(frozen=True)
class Report:
    """One thing worth telling: a duplicate dropped or a gap found."""

    outcome: Outcome
    change: dict[str, object]


def follow(
    kafka: KafkaConnection,
    *,
    changes_topic: str,
    tiers_topic: str | None,
    follower: Follower,
    once: bool,
    on_report: Callable[[Report], None],
    on_tick: Callable[[], None] = lambda: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> None:
    """Bootstrap (unless ``tiers_topic`` is None: then every change from the start), then
    apply changes; with ``once``, return when the change topic's end (as of then) is read."""
    try:
        consumer = KafkaConsumer(**kafka.config(KafkaConsumer, enable_auto_commit=False))
    except KafkaError as exc:
        raise BrokerUnavailable(f"cannot reach Kafka at {kafka.describe()} ({exc})") from None
    try:
        changes = _partitions(consumer, changes_topic)
        start = consumer.end_offsets(changes) if tiers_topic else None
        if tiers_topic:
            tiers = _partitions(consumer, tiers_topic)
            for rec in _read_to_end(consumer, tiers):
                follower.bootstrap(
                    (rec.key or b"").decode(), orjson.loads(rec.value) if rec.value else None
                )
        consumer.assign(changes)
        if start is None:
            consumer.seek_to_beginning(*changes)
        else:
            for tp in changes:
                consumer.seek(tp, start[tp])
        end = consumer.end_offsets(changes)
        last_tick = 0.0
        while not should_stop():
            for recs in consumer.poll(timeout_ms=POLL_MS).values():
                for rec in recs:
                    change = orjson.loads(rec.value or b"{}")
                    outcome = follower.apply(change)
                    if outcome != "applied":
                        on_report(Report(outcome, change))
            if time.monotonic() - last_tick >= 1.0:
                on_tick()
                last_tick = time.monotonic()
            if once and all(consumer.position(tp) >= end[tp] for tp in changes):
                return
    finally:
        consumer.close()


def _partitions(consumer: KafkaConsumer, topic: str) -> list[TopicPartition]:
    deadline = time.monotonic() + 15
    parts = consumer.partitions_for_topic(topic)
    while not parts and time.monotonic() < deadline:
        time.sleep(0.2)
        parts = consumer.partitions_for_topic(topic)
    if not parts:
        raise BrokerUnavailable(f"no topic {topic!r} on the brokers")
    return [TopicPartition(topic, p) for p in sorted(parts)]


def _read_to_end(consumer: KafkaConsumer, tps: list[TopicPartition]) -> Iterator[Any]:
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    end = consumer.end_offsets(tps)
    while any(consumer.position(tp) < end[tp] for tp in tps):
        for recs in consumer.poll(timeout_ms=POLL_MS).values():
            yield from recs
