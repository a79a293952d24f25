"""Helpers for integration tests: run the CLI, read topics to their end, recompute."""

from __future__ import annotations

import math
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from consumer.service.records import InputRecord
from consumer.service.redis_store import RedisStateStore
from online_models.control_group import ControlGroup
from online_models.event import PURCHASE_INDEX, REFUND_INDEX, Event
from online_models.features import RATES_PER_MS
from online_models.state_codec import state_json
from schemas.decode import EventDecoder, key_rejection

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
    def tiers(self) -> str:
        return f"it-tiers-{self.suffix}"

    @property
    def forget(self) -> str:
        return f"it-forget-{self.suffix}"

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
            "TIERSTREAM_TIERS_TOPIC": self.tiers,
            "TIERSTREAM_FORGET_TOPIC": self.forget,
            "TIERSTREAM_KEY_PREFIX": self.prefix,
            "TIERSTREAM_METRICS_PORT": "0",
            "TIERSTREAM_INSTANCE_ID": self.instance,
        }
        env.update(extra)
        return env


def stored_users(prefix: str, users: Iterable[str], *, url: str = REDIS) -> dict[str, bytes | None]:
    """Each user's stored state, read where the deployment's recorded partition count
    routes them (``consumer/service/keys.py``)."""
    store = RedisStateStore(url, prefix=prefix)
    try:
        return store.get_users(list(users))
    finally:
        store.close()


def populations(
    prefix: str, topic: str, *, url: str = REDIS
) -> tuple[dict[int, dict[str, int]], dict[int, dict[str, int]]]:
    """Per partition of ``topic`` (by the recorded count), its tier population as counted
    (the ``pop`` hash, tiers with nobody left out) and as its stored users' tiers say."""
    store = RedisStateStore(url, prefix=prefix)
    try:
        n = store.partition_counts()[topic]
        counted = store.tier_counts([(topic, p) for p in range(n)])
        found: dict[int, dict[str, int]] = {p: {} for p in range(n)}
        keys = list(store.client.scan_iter(match=store.keys.all_users, count=1000))
        for key, raw in zip(keys, store.get_many(keys), strict=True):
            home = store.keys.parse_user(key.decode())
            if raw is not None and home is not None and home[0] == topic:
                tier = state_json(raw)["tier"]
                found[home[1]][tier] = found[home[1]].get(tier, 0) + 1
        return {
            tp[1]: {t: k for t, k in c.population.items() if k} for tp, c in counted.items()
        }, found
    finally:
        store.close()


def control_flags(topic: str, group: ControlGroup) -> tuple[int, list[str]]:
    """The tier changes on ``topic`` checked against ``group``, drawn in this process:
    (how many, those whose ``control`` flag is not the group's)."""
    changes = [orjson.loads(r.value or b"") for r in read_topic(topic)]
    wrong = [c["event_id"] for c in changes if c["control"] != group.holds(c["user_id"])]
    return len(changes), wrong


def stored_watermark(prefix: str, *, url: str = REDIS) -> int | None:
    """The newest watermark over the deployment's partitions."""
    store = RedisStateStore(url, prefix=prefix)
    try:
        return store.watermark()
    finally:
        store.close()


def free_port() -> int:
    """A loopback TCP port nothing listens on now (for a server the test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_tool(binary: str) -> str:
    """Path of ``binary``: a developer machine without it skips the test, CI fails it
    (``make test`` installs the tools: ``ensure_apt_packages`` in ops/stack-lib.sh), so
    CI cannot go green without having run it."""
    path = shutil.which(binary)
    if path is None:
        msg = f"`{binary}` is not installed (PATH={os.environ.get('PATH', '')})"
        if os.environ.get("CI"):
            pytest.fail(f"{msg}; CI is set, so the test cannot be skipped")
        pytest.skip(msg)
    return path


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


def start_service(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """``tierstream run ARGS`` in the background; its stderr (text) kept for the test."""
    return subprocess.Popen(
        [sys.executable, "-m", "consumer.cli", "run", *args],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_topic(topic: str, *, settle_s: float = 30.0) -> list[InputRecord]:
    """Every record of ``topic``, from the beginning to the end offsets seen now."""
    return [rec for rec, _ in read_topic_with_headers(topic, settle_s=settle_s)]


def read_topic_with_headers(
    topic: str, *, settle_s: float = 30.0
) -> list[tuple[InputRecord, list[tuple[str, bytes]]]]:
    """:func:`read_topic`, each record with its Kafka headers."""
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
        out: list[tuple[InputRecord, list[tuple[str, bytes]]]] = []
        while any(consumer.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} did not reach its end offsets {end}")
            for tp, recs in consumer.poll(timeout_ms=500).items():
                out.extend(
                    (
                        InputRecord(tp.topic, tp.partition, r.offset, r.timestamp, r.key, r.value),
                        list(r.headers or []),
                    )
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


# Admin calls run in a child process: kafka-python's admin client can leave a socket
# open after close(), which this process's "warnings are errors" would report later, in
# whichever test happens to collect it.
_CREATE_TOPIC = """
import sys
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
admin = KafkaAdminClient(bootstrap_servers=sys.argv[1])
admin.create_topics([NewTopic(sys.argv[2], int(sys.argv[3]), 1)])
admin.close()
"""

_GROW_TOPIC = """
import sys
from kafka import KafkaAdminClient
from kafka.admin import NewPartitions
admin = KafkaAdminClient(bootstrap_servers=sys.argv[1])
admin.create_partitions({sys.argv[2]: NewPartitions(int(sys.argv[3]))})
admin.close()
"""

_WAIT_FOR_GROUP = """
import sys, time
from kafka import KafkaAdminClient
bootstrap, group = sys.argv[1], sys.argv[2]
members, timeout_s = int(sys.argv[3]), float(sys.argv[4])
admin = KafkaAdminClient(bootstrap_servers=bootstrap)
deadline = time.monotonic() + timeout_s
info = None
while time.monotonic() < deadline:
    # Listed means its coordinator is up: describing it earlier, on a fresh broker,
    # fails on "coordinator not available".
    listed = {g["group_id"]: g for g in admin.list_groups()}
    if listed.get(group, {}).get("group_state") == "Stable":
        info = admin.describe_groups([group])[group]
        holding = [m for m in info["members"] if m["member_assignment"]]
        if info["group_state"] == "Stable" and len(holding) == members:
            sys.exit(0)
    time.sleep(0.2)
sys.exit(f"group {group} is not stable with {members} members: {info}")
"""


def _admin_script(script: str, *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", script, KAFKA, *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def create_topic(topic: str, partitions: int) -> None:
    """Create ``topic`` with ``partitions`` partitions (replication 1, the local stack)."""
    _admin_script(_CREATE_TOPIC, topic, str(partitions))


def grow_topic(topic: str, partitions: int) -> None:
    """Give ``topic`` more partitions, ``partitions`` in all (Kafka cannot take any away)."""
    _admin_script(_GROW_TOPIC, topic, str(partitions))


def wait_for_group(group: str, members: int, *, timeout_s: float = 60.0) -> None:
    """Wait until ``group`` is stable with ``members`` members, each holding partitions."""
    done = subprocess.run(
        [sys.executable, "-c", _WAIT_FOR_GROUP, KAFKA, group, str(members), str(timeout_s)],
        capture_output=True,
        text=True,
        timeout=timeout_s + 30,
    )
    if done.returncode != 0:
        raise TimeoutError(done.stderr.strip().splitlines()[-1])


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


def recompute_features(records: Iterable[InputRecord]) -> dict[str, Expected]:
    """Closed-form features of every user, deduplicated by event id, from the records the
    service applies (valid, within the default limits, keyed by their user id)."""
    decoder = EventDecoder()
    now_ms = time.time_ns() // 1_000_000
    by_user: dict[str, dict[str, Event]] = {}
    for rec in records:
        event = decoder.decode(rec.value, now_ms=now_ms)
        if isinstance(event, Event) and key_rejection(rec.key, event.user_id) is None:
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
