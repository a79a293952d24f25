"""Helpers for integration tests: run the CLI, read topics to their end, recompute."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

from consumer.records import InputRecord
from online_models.event import PURCHASE_INDEX, REFUND_INDEX, Event
from online_models.features import RATES_PER_MS
from schemas.decode import EventDecoder

KAFKA = os.environ.get("TIERSTREAM_TEST_KAFKA", "127.0.0.1:9092")
REDIS = os.environ.get("TIERSTREAM_TEST_REDIS", "redis://127.0.0.1:6379/0")
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Names:
    """Topic, group and key names unique to one test."""

    suffix: str

    @classmethod
    def fresh(cls) -> Names:
        return cls(uuid.uuid4().hex[:10])

    @property
    def input(self) -> str:
        return f"it-events-{self.suffix}"

    @property
    def output(self) -> str:
        return f"it-changes-{self.suffix}"

    @property
    def dlq(self) -> str:
        return f"it-dlq-{self.suffix}"

    @property
    def group(self) -> str:
        return f"it-group-{self.suffix}"

    @property
    def instance(self) -> str:
        return f"it-instance-{self.suffix}"

    @property
    def prefix(self) -> str:
        return f"it-{self.suffix}"

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for the ``tierstream`` CLI on the local stack with these names."""
        env = {
            **os.environ,
            "TIERSTREAM_KAFKA_BOOTSTRAP": KAFKA,
            "TIERSTREAM_REDIS_URL": REDIS,
            "TIERSTREAM_GROUP_ID": self.group,
            "TIERSTREAM_INPUT_TOPIC": self.input,
            "TIERSTREAM_OUTPUT_TOPIC": self.output,
            "TIERSTREAM_DLQ_TOPIC": self.dlq,
            "TIERSTREAM_KEY_PREFIX": self.prefix,
            "TIERSTREAM_METRICS_PORT": "0",
            "TIERSTREAM_INSTANCE_ID": self.instance,
        }
        env.update(extra)
        return env


def cli(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``tierstream ARGS`` as a user would, in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "consumer.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_topic(topic: str, *, settle_s: float = 30.0) -> list[InputRecord]:
    """Every record of ``topic``, from the beginning to the end offsets seen now."""
    consumer = KafkaConsumer(bootstrap_servers=KAFKA, enable_auto_commit=False)
    try:
        deadline = time.monotonic() + settle_s
        parts = consumer.partitions_for_topic(topic)
        while not parts and time.monotonic() < deadline:
            time.sleep(0.2)
            parts = consumer.partitions_for_topic(topic)
        if not parts:
            return []
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        out: list[InputRecord] = []
        while any(consumer.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} did not reach its end offsets {end}")
            for tp, recs in consumer.poll(timeout_ms=500).items():
                out.extend(
                    InputRecord(tp.topic, tp.partition, r.offset, r.timestamp, r.key, r.value)
                    for r in recs
                )
        return out
    finally:
        consumer.close()


def committed_offsets(group: str, topic: str) -> dict[int, int | None]:
    """The group's committed offset per partition of ``topic``."""
    consumer = KafkaConsumer(bootstrap_servers=KAFKA, group_id=group, enable_auto_commit=False)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        return {p: consumer.committed(TopicPartition(topic, p)) for p in sorted(parts)}
    finally:
        consumer.close(autocommit=False)


def end_offsets(topic: str) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=KAFKA)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        return {tp.partition: off for tp, off in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


@dataclass
class Expected:
    """Per-user features recomputed straight from the events (no incremental update)."""

    last_ms: int
    first_ms: int
    counts: list[list[float]]
    spend: list[float]
    refunded: list[float]
    events: int
    purchases: int
    total_spend: float


def recompute_features(values: Iterable[bytes | None]) -> dict[str, Expected]:
    """Closed-form features of every user, deduplicated by event id."""
    decoder = EventDecoder()
    by_user: dict[str, dict[str, Event]] = {}
    for value in values:
        event = decoder.decode(value)
        if isinstance(event, Event):
            by_user.setdefault(event.user_id, {}).setdefault(event.event_id, event)
    out: dict[str, Expected] = {}
    for user, events_by_id in by_user.items():
        events = list(events_by_id.values())
        t_max = max(e.timestamp_ms for e in events)
        counts = [[0.0] * 11 for _ in RATES_PER_MS]
        spend = [0.0] * len(RATES_PER_MS)
        refunded = [0.0] * len(RATES_PER_MS)
        for h, rate in enumerate(RATES_PER_MS):
            for e in events:
                w = math.exp(-rate * (t_max - e.timestamp_ms))
                counts[h][e.type_index] += w
                if e.type_index == PURCHASE_INDEX:
                    spend[h] += e.amount * w
                elif e.type_index == REFUND_INDEX:
                    refunded[h] += e.amount * w
        out[user] = Expected(
            last_ms=t_max,
            first_ms=min(e.timestamp_ms for e in events),
            counts=counts,
            spend=spend,
            refunded=refunded,
            events=len(events),
            purchases=sum(e.type_index == PURCHASE_INDEX for e in events),
            total_spend=sum(e.amount for e in events if e.type_index == PURCHASE_INDEX),
        )
    return out
