"""Smoke test of the multi-node stack (ops/cluster-stack.sh), without the service.

Proves, with the same client libraries the service uses (kafka-python 3, redis-py), that
the stack is what its settings say:

- Kafka over SASL_SSL/SCRAM-SHA-512 as ``tierstream``: a topic with replication factor 3
  and all 3 replicas in sync, records produced with acks=all and consumed back; SCRAM-SHA-256
  and a client certificate (mTLS-ready) work too;
- a wrong password and a CA that did not sign the brokers' certificates both FAIL, and what
  kafka-python raises (and logs) in each case, and after how long;
- Redis Cluster: keys across the slots of all three primaries written and read back;
- with faults (unless --no-faults): after ``kill-broker 2`` writes with acks=all still
  succeed (min.insync.replicas=2) and nothing acknowledged is lost; after
  ``kill-redis-primary`` the cluster serves again, with the measured outage. Both nodes are
  restarted afterwards, so the stack is left as it was found.

Run it against a running stack, with the settings ``env`` prints:

    bash ops/cluster-stack.sh up
    eval "$(bash ops/cluster-stack.sh env)"
    .venv/bin/python ops/cluster_smoke.py [--no-faults]

Exit status 0 when every check passed; the last line says which failed otherwise.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from redis.cluster import ClusterNode, RedisCluster

OPS_DIR = Path(__file__).resolve().parent
STACK_SCRIPT = OPS_DIR / "cluster-stack.sh"
KILLED_BROKER = 2


class SmokeFailure(Exception):
    """A check did not hold."""


@dataclass(frozen=True)
class Settings:
    """The TIERSTREAM_* client settings that ``cluster-stack.sh env`` prints."""

    bootstrap: list[str]
    security_protocol: str
    sasl_mechanism: str
    username: str
    password: str
    cafile: str
    redis_nodes: list[tuple[str, int]]

    @property
    def secrets_dir(self) -> Path:
        return Path(self.cafile).parent

    @classmethod
    def from_env(cls) -> Settings:
        missing = [n for n in _SETTING_NAMES if not os.environ.get(n)]
        if missing:
            raise SmokeFailure(
                f'{", ".join(missing)} not set: run eval "$(bash ops/cluster-stack.sh env)" first'
            )
        env = os.environ
        url = env["TIERSTREAM_REDIS_URL"]
        match = re.fullmatch(r"redis\+cluster://([^/]+)(?:/\d+)?", url)
        if not match:
            raise SmokeFailure(f"TIERSTREAM_REDIS_URL={url!r} is not redis+cluster://h:p,h:p/0")
        nodes = [(h, int(p)) for h, _, p in (n.rpartition(":") for n in match[1].split(","))]
        return cls(
            bootstrap=env["TIERSTREAM_KAFKA_BOOTSTRAP"].split(","),
            security_protocol=env["TIERSTREAM_KAFKA_SECURITY_PROTOCOL"],
            sasl_mechanism=env["TIERSTREAM_KAFKA_SASL_MECHANISM"],
            username=env["TIERSTREAM_KAFKA_SASL_USERNAME"],
            password=Path(env["TIERSTREAM_KAFKA_SASL_PASSWORD_FILE"]).read_text().strip(),
            cafile=env["TIERSTREAM_KAFKA_SSL_CAFILE"],
            redis_nodes=nodes,
        )

    def kafka(self, **overrides: Any) -> dict[str, Any]:
        """kafka-python keyword arguments; overrides replace any of them."""
        config: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": self.security_protocol,
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_plain_username": self.username,
            "sasl_plain_password": self.password,
            "ssl_cafile": self.cafile,
        }
        config.update(overrides)
        return config


_SETTING_NAMES = (
    "TIERSTREAM_KAFKA_BOOTSTRAP",
    "TIERSTREAM_KAFKA_SECURITY_PROTOCOL",
    "TIERSTREAM_KAFKA_SASL_MECHANISM",
    "TIERSTREAM_KAFKA_SASL_USERNAME",
    "TIERSTREAM_KAFKA_SASL_PASSWORD_FILE",
    "TIERSTREAM_KAFKA_SSL_CAFILE",
    "TIERSTREAM_REDIS_URL",
)


def say(message: str) -> None:
    print(message, flush=True)


def stack(*args: str) -> str:
    """Runs a cluster-stack.sh sub-command; its stdout, or SmokeFailure with its stderr."""
    done = subprocess.run(
        ["bash", str(STACK_SCRIPT), *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SmokeFailure(f"cluster-stack.sh {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


# ------------------------------------------------------------------------------ Kafka ---


def describe(admin: KafkaAdminClient, topic: str) -> list[dict[str, Any]]:
    (described,) = admin.describe_topics([topic])
    return sorted(described["partitions"], key=lambda p: p["partition_index"])


def wait_isr(admin: KafkaAdminClient, topic: str, size: int, timeout: float = 30) -> float:
    """Seconds until every partition's ISR has exactly ``size`` replicas."""
    start = time.monotonic()
    while True:
        partitions = describe(admin, topic)
        if all(len(p["isr_nodes"]) == size for p in partitions):
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            isrs = {p["partition_index"]: p["isr_nodes"] for p in partitions}
            raise SmokeFailure(f"{topic}: ISRs {isrs} not all of size {size} after {timeout}s")
        time.sleep(0.5)


def produce(settings: Settings, topic: str, values: list[bytes], partitions: int) -> None:
    producer = KafkaProducer(**settings.kafka(acks="all", linger_ms=0))
    try:
        futures = [
            producer.send(topic, value=v, partition=i % partitions) for i, v in enumerate(values)
        ]
        for future in futures:
            future.get(timeout=30)
    finally:
        producer.close(timeout=10)


def consume_all(settings: Settings, topic: str, expected: set[bytes]) -> set[bytes]:
    """Reads the topic from the start with a new group until every expected value came
    (or 60 s passed); returns what was read. A write retried after a timeout may be
    there twice: delivery is at least once."""
    consumer = KafkaConsumer(
        topic,
        **settings.kafka(
            group_id=f"smoke-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        ),
    )
    got: set[bytes] = set()
    deadline = time.monotonic() + 60
    try:
        while not expected <= got and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=1000).values():
                got.update(r.value for r in records)
        consumer.commit()  # the group's offsets go to __consumer_offsets (RF 3)
    finally:
        consumer.close()
    return got


def check_topic_and_records(settings: Settings, topic: str) -> list[bytes]:
    admin = KafkaAdminClient(**settings.kafka())
    try:
        start = time.monotonic()
        admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=3)])
        partitions = describe(admin, topic)
        bad = [p for p in partitions if len(p["replica_nodes"]) != 3]
        if bad:
            raise SmokeFailure(f"{topic}: partitions without 3 replicas: {bad}")
        wait_isr(admin, topic, 3)
        leaders = sorted({p["leader_id"] for p in partitions})
        say(
            f"ok   topic {topic}: 3 partitions, replication factor 3, ISR 3/3, "
            f"leaders on brokers {leaders} ({time.monotonic() - start:.1f}s)"
        )
    finally:
        admin.close()
    values = [f"record-{i}".encode() for i in range(30)]
    start = time.monotonic()
    produce(settings, topic, values, partitions=3)
    got = consume_all(settings, topic, set(values))
    if got != set(values):
        raise SmokeFailure(f"{topic}: produced {len(values)} records, consumed {len(got)}")
    say(
        f"ok   produced {len(values)} records (acks=all) and consumed them back as "
        f"{settings.username} ({time.monotonic() - start:.1f}s)"
    )
    return values


def check_other_credentials(settings: Settings) -> None:
    """SCRAM-SHA-256 is enabled too; a client certificate from the stack's CA is accepted."""
    secrets = settings.secrets_dir
    variants = {
        "SCRAM-SHA-256": settings.kafka(sasl_mechanism="SCRAM-SHA-256"),
        "client certificate (mTLS-ready) + SCRAM-SHA-512": settings.kafka(
            ssl_certfile=str(secrets / "client.pem"), ssl_keyfile=str(secrets / "client-key.pem")
        ),
    }
    for name, config in variants.items():
        admin = KafkaAdminClient(**config)
        try:
            admin.list_topics()
        finally:
            admin.close()
        say(f"ok   {name} accepted")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.levelname} {record.name}: {record.getMessage()}")


def _distinct(messages: list[str]) -> list[str]:
    """The log lines with node ids, ports and backoffs blanked, each once."""
    seen: dict[str, None] = {}
    for m in messages:
        m = re.sub(r"bootstrap-\d|\d+\.\d+ secs|127\.0\.0\.1:\d+(<-\d+)?", "…", m)
        seen.setdefault(m, None)
    return list(seen)


def expect_rejected(name: str, config: dict[str, Any]) -> str:
    """Connects with a bad setting; the connection must fail. Returns what was raised."""
    handler = _Collect()
    kafka_logger = logging.getLogger("kafka")
    kafka_logger.addHandler(handler)
    start = time.monotonic()
    try:
        admin = KafkaAdminClient(**config)
    except Exception as exc:
        took = time.monotonic() - start
        raised = f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}"
    else:
        admin.close()
        raise SmokeFailure(f"{name}: the connection was accepted")
    finally:
        kafka_logger.removeHandler(handler)
    say(f"ok   {name} rejected after {took:.1f}s: KafkaAdminClient() raised {raised}")
    for line in _distinct(handler.messages):
        say(f"       log: {line}")
    return raised


def check_rejections(settings: Settings) -> None:
    expect_rejected("wrong password", settings.kafka(sasl_plain_password="not-the-password"))
    untrusted = settings.secrets_dir / "untrusted-ca.pem"
    expect_rejected(f"untrusted CA ({untrusted.name})", settings.kafka(ssl_cafile=str(untrusted)))


def check_broker_failover(settings: Settings, topic: str, before: list[bytes]) -> float:
    """Kills broker 2; acks=all writes must go on. Returns seconds until every partition
    (including those broker 2 led) accepted one again."""
    admin = KafkaAdminClient(**settings.kafka())
    producer = KafkaProducer(
        **settings.kafka(acks="all", linger_ms=0, request_timeout_ms=5000, retry_backoff_ms=100)
    )
    after: list[bytes] = []
    try:
        led = [
            p["partition_index"] for p in describe(admin, topic) if p["leader_id"] == KILLED_BROKER
        ]
        stack("kill-broker", str(KILLED_BROKER))
        killed_at = time.monotonic()
        for partition in range(3):
            value = f"after-kill-{partition}".encode()
            _retry_until(lambda p=partition, v=value: producer.send(topic, v, partition=p).get(10))
            after.append(value)
        took = time.monotonic() - killed_at
        say(
            f"ok   broker {KILLED_BROKER} killed (led partitions {led}): every partition took "
            f"an acks=all write again after {took:.1f}s"
        )
        wait_isr(admin, topic, 2)
        for i in range(10):
            producer.send(topic, f"isr2-{i}".encode(), partition=i % 3).get(30)
            after.append(f"isr2-{i}".encode())
        say("ok   ISR is 2/3 everywhere and acks=all writes succeed (min.insync.replicas=2)")
    finally:
        producer.close(timeout=10)
    try:
        stack("start-broker", str(KILLED_BROKER))
        wait_isr(admin, topic, 3, timeout=60)
    finally:
        admin.close()
    acknowledged = set(before + after)
    lost = acknowledged - consume_all(settings, topic, acknowledged)
    if lost:
        raise SmokeFailure(f"{topic}: {len(lost)} of {len(acknowledged)} acknowledged records lost")
    say(f"ok   broker {KILLED_BROKER} back, ISR 3/3; all {len(acknowledged)} acknowledged read")
    return took


def _retry_until(attempt: Callable[[], object], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            attempt()
            return
        except Exception as exc:
            if time.monotonic() > deadline:
                raise SmokeFailure(f"still failing after {timeout}s: {exc!r}") from exc
            time.sleep(0.2)


# ------------------------------------------------------------------------------ Redis ---


@contextmanager
def redis_cluster(settings: Settings) -> Iterator[RedisCluster]:
    client = RedisCluster(
        startup_nodes=[ClusterNode(h, p) for h, p in settings.redis_nodes],
        socket_timeout=1,
        socket_connect_timeout=1,
    )
    try:
        yield client
    finally:
        client.close()


def check_redis(settings: Settings, run_id: str) -> None:
    with redis_cluster(settings) as rc:
        keys = [f"smoke:{run_id}:{i}" for i in range(300)]
        start = time.monotonic()
        for key in keys:
            rc.set(key, key, ex=600)
        wrong = [k for k in keys if rc.get(k) != k.encode()]
        if wrong:
            raise SmokeFailure(f"redis: {len(wrong)} keys read back wrong, e.g. {wrong[0]}")
        owners = {rc.get_node_from_key(k).port for k in keys}
        primaries = {n.port for n in rc.get_primaries()}
        if owners != primaries or len(primaries) != 3:
            raise SmokeFailure(f"redis: keys landed on {owners}, primaries are {primaries}")
        slots = len({rc.keyslot(k) for k in keys})
        say(
            f"ok   redis: {len(keys)} keys in {slots} slots on primaries {sorted(primaries)} "
            f"written and read back ({time.monotonic() - start:.1f}s)"
        )


def _key_in_slot(rc: RedisCluster, slot: int, prefix: str) -> str:
    return next(k for k in (f"{prefix}:{i}" for i in range(100000)) if rc.keyslot(k) == slot)


class _Writer(threading.Thread):
    """Writes one key every 50 ms; the longest time without a successful write is the
    outage the client saw, whether its calls failed or blocked meanwhile."""

    def __init__(self, rc: RedisCluster, key: str) -> None:
        super().__init__(daemon=True)
        self.rc, self.key = rc, key
        self.stop = threading.Event()
        self.longest_gap = 0.0
        self.errors: list[str] = []

    def run(self) -> None:
        last_ok = time.monotonic()
        n = 0
        while not self.stop.is_set():
            n += 1
            try:
                self.rc.set(self.key, n)
            except Exception as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
            else:
                now = time.monotonic()
                self.longest_gap = max(self.longest_gap, now - last_ok)
                last_ok = now
            time.sleep(0.05)

    def finish(self, settle: float = 30) -> None:
        """Stops once a write has succeeded after the last error (or after ``settle`` s)."""
        deadline = time.monotonic() + settle
        errors = -1
        while time.monotonic() < deadline and errors != len(self.errors):
            errors = len(self.errors)
            time.sleep(1)
        self.stop.set()
        self.join()


def check_redis_failover(settings: Settings, run_id: str) -> tuple[float, float]:
    """Kills the primary of slot 0 while a client writes there. Returns the stack's failover
    time and the longest time the client went without a successful write."""
    with redis_cluster(settings) as rc:
        key = _key_in_slot(rc, 0, f"smoke:{run_id}:slot0")
        before = {f"smoke:{run_id}:pre:{i}": str(i) for i in range(100)}
        for k, v in before.items():
            rc.set(k, v, ex=600)
        time.sleep(1.2)  # appendfsync everysec, and the replicas' acks, before the crash
        writer = _Writer(rc, key)
        writer.start()
        time.sleep(0.5)
        out = stack("kill-redis-primary")
        fields = dict(f.split("=", 1) for f in out.split())
        writer.finish()
        _retry_until(lambda: rc.set(key, "after"), 10)
        lost = [k for k, v in before.items() if rc.get(k) != v.encode()]
        errors = f"{len(writer.errors)}, first: {writer.errors[0]}" if writer.errors else "none"
        say(
            f"ok   redis primary {fields['old_primary']} killed: replica {fields['new_primary']} "
            f"promoted after {fields['failover_seconds']}s (stack's measure); a client writing "
            f"to slot 0 every 50 ms went {writer.longest_gap:.1f}s without a successful write "
            f"(client errors: {errors}); "
            f"{len(before) - len(lost)}/{len(before)} keys written before the kill still there"
        )
        if lost:
            raise SmokeFailure(f"redis: {len(lost)} keys written >1 s before the kill are gone")
    stack("start-redis", fields["old_primary"])
    say(f"ok   redis {fields['old_primary']} restarted and rejoined as a replica")
    return float(fields["failover_seconds"]), writer.longest_gap


# ---------------------------------------------------------------------------- the run ---


def run(no_faults: bool) -> None:
    settings = Settings.from_env()
    run_id = uuid.uuid4().hex[:8]
    topic = f"smoke-{run_id}"
    say(f"cluster smoke {run_id}: Kafka {','.join(settings.bootstrap)}, Redis cluster")
    values = check_topic_and_records(settings, topic)
    check_other_credentials(settings)
    check_rejections(settings)
    check_redis(settings, run_id)
    if no_faults:
        return
    broker_s = check_broker_failover(settings, topic, values)
    redis_s, outage = check_redis_failover(settings, run_id)
    say(
        f"failover: Kafka {broker_s:.1f}s (kill to acks=all on every partition); "
        f"Redis {redis_s:.1f}s (kill to promoted replica), client outage {outage:.1f}s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--no-faults", action="store_true", help="skip killing a broker and a Redis primary"
    )
    args = parser.parse_args()
    # kafka-python logs every failed connection attempt at ERROR: the rejection checks
    # capture and report those; the ones a killed broker causes would be noise here.
    kafka_logger = logging.getLogger("kafka")
    kafka_logger.setLevel(logging.WARNING)
    kafka_logger.propagate = False
    kafka_logger.addHandler(logging.NullHandler())
    start = time.monotonic()
    try:
        run(args.no_faults)
    except SmokeFailure as failure:
        say(f"FAILED: {failure}")
        return 1
    say(f"all checks passed in {time.monotonic() - start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
