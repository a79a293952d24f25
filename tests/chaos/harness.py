"""The chaos harness: real servers, real ``tierstream run`` processes, and the faults.

What it drives, and how:

- :class:`StackControl` — one ``ops/stack.sh`` stack (its folder and ports). Faults stop,
  kill, restart and roll back its servers, so it refuses the standard ports (9092, 9093,
  6379): the developer's stack is never touched. The full suite runs on the chaos stack
  (``.stack-chaos``, ports 19092/19093/16379); the small suite uses the standard stack
  read-only and, for Redis faults, a private ``redis-server`` it starts itself
  (:func:`private_redis`).
- :mod:`tests.chaos.cluster` — the ``tierstream run`` instances of a scenario in one
  consumer group, a supervisor and the monitors (built on what this module provides).
- :class:`Names` — the topics, group and key prefix of one scenario, and the environment
  of its instances; :func:`create_topic`, :func:`read_topic`, :func:`committed_offsets`.
- :class:`RedisView` — the partitions' applied offsets and outboxes, the users' states.
- :class:`Producer` — produces a prepared list of ``(key, value)`` records, paced, in the
  background, and remembers where each one landed (partition, offset).

Everything is timed on ``time.monotonic()`` (one clock for every process of the machine)
and written to a :class:`Timeline` that failing tests print.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from consumer.service.kafka_connection import KafkaConnection
from consumer.service.keys import KeySpace
from consumer.service.records import InputRecord
from online_models.state_codec import state_json

REPO = Path(__file__).resolve().parents[2]
#: The developer's stack (make stack-up): faults must never restart it.
STANDARD_PORTS = frozenset({9092, 9093, 6379})
CHAOS_STACK_DIR = REPO / ".stack-chaos"
CHAOS_PORTS = {"kafka": 19092, "controller": 19093, "redis": 16379}
#: The consumer group's session timeout (consumer/service/kafka_io.py): how long a
#: killed or frozen member keeps its partitions.
SESSION_TIMEOUT_S = 10.0


class HarnessError(RuntimeError):
    """The harness itself could not do what a scenario asked (not a service defect)."""


# ------------------------------------------------------------------------- timeline ---


class Timeline:
    """What happened when, in seconds since the scenario began."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.entries: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def note(self, what: str, at: float | None = None) -> float:
        """Record ``what`` (at monotonic time ``at``, default now); return that time."""
        t = time.monotonic() if at is None else at
        with self._lock:
            self.entries.append((t, what))
        return t

    def rel(self, t: float) -> float:
        """Seconds since the scenario began."""
        return t - self.t0

    def render(self, last: int = 80) -> str:
        """The last ``last`` entries, one a line."""
        with self._lock:
            entries = sorted(self.entries)[-last:]
        return "\n".join(f"  {self.rel(t):8.2f}s  {what}" for t, what in entries)


# --------------------------------------------------------------------------- stacks ---


@dataclass(frozen=True)
class Endpoints:
    """Where the servers a scenario uses answer."""

    kafka: str
    redis: str


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(port: int, path: str, timeout: float = 0.5) -> tuple[int, str] | None:
    """Status and body of ``GET http://127.0.0.1:{port}{path}``; None if nobody answers in
    full: refused, timed out, or the process killed between the headers and the end of
    the body (``http.client.IncompleteRead``, which is not an ``OSError``). A monitor
    thread polls instances that a scenario kills at any moment: any of these is "no
    answer", never an exception in the thread."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:  # its response holds the socket: unclosed, a ResourceWarning
            return exc.code, ""
    except (OSError, ValueError, http.client.HTTPException):
        return None


class StackControl:
    """One ``ops/stack.sh`` stack, driven with its environment overrides."""

    def __init__(
        self,
        directory: Path,
        *,
        kafka_port: int,
        controller_port: int,
        redis_port: int,
        kafka_libs: Path | None = None,
    ) -> None:
        ports = {kafka_port, controller_port, redis_port}
        if ports & STANDARD_PORTS:
            raise HarnessError(
                f"refusing to drive a stack on {sorted(ports & STANDARD_PORTS)}: "
                "that is the developer's stack (make stack-up); faults restart servers"
            )
        self.directory = directory
        self.kafka_port = kafka_port
        self.controller_port = controller_port
        self.redis_port = redis_port
        self.kafka_libs = kafka_libs

    @classmethod
    def chaos(cls) -> StackControl:
        """The chaos stack, as ``make chaos`` starts it (same environment variables)."""
        env = os.environ
        default_libs = REPO / ".stack" / "kafka-libs"
        libs = env.get("TIERSTREAM_STACK_KAFKA_LIBS") or (
            str(default_libs) if default_libs.is_dir() else ""
        )
        return cls(
            Path(env.get("TIERSTREAM_STACK_DIR") or CHAOS_STACK_DIR),
            kafka_port=int(env.get("TIERSTREAM_STACK_KAFKA_PORT") or CHAOS_PORTS["kafka"]),
            controller_port=int(
                env.get("TIERSTREAM_STACK_CONTROLLER_PORT") or CHAOS_PORTS["controller"]
            ),
            redis_port=int(env.get("TIERSTREAM_STACK_REDIS_PORT") or CHAOS_PORTS["redis"]),
            kafka_libs=Path(libs) if libs else None,
        )

    @property
    def endpoints(self) -> Endpoints:
        return Endpoints(f"127.0.0.1:{self.kafka_port}", f"redis://127.0.0.1:{self.redis_port}/0")

    def env(self) -> dict[str, str]:
        """The environment ``ops/stack.sh`` reads for this stack."""
        env = {
            **os.environ,
            "TIERSTREAM_STACK_DIR": str(self.directory),
            "TIERSTREAM_STACK_KAFKA_PORT": str(self.kafka_port),
            "TIERSTREAM_STACK_CONTROLLER_PORT": str(self.controller_port),
            "TIERSTREAM_STACK_REDIS_PORT": str(self.redis_port),
        }
        env.pop("TIERSTREAM_STACK_FRESH", None)
        if self.kafka_libs is not None:
            env["TIERSTREAM_STACK_KAFKA_LIBS"] = str(self.kafka_libs)
        return env

    def sh(self, *args: str, timeout: float = 240.0, fresh: bool = False) -> str:
        """Run ``bash ops/stack.sh ARGS``; its log; HarnessError if it fails."""
        self.directory.mkdir(parents=True, exist_ok=True)
        ignore = self.directory / ".gitignore"
        if not ignore.exists():
            ignore.write_text("*\n")  # a stack folder is never source
        env = self.env()
        if fresh:
            env["TIERSTREAM_STACK_FRESH"] = "1"
        done = subprocess.run(
            ["bash", str(REPO / "ops" / "stack.sh"), *args],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise HarnessError(f"ops/stack.sh {' '.join(args)} failed:\n{done.stderr}")
        return done.stderr

    def redis_up(self) -> bool:
        """Does this stack's Redis answer?"""
        try:
            client = redis.Redis(port=self.redis_port, socket_connect_timeout=1)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except redis.RedisError:
            return False

    def kafka_up(self) -> bool:
        """Does this stack's Kafka listen?"""
        with socket.socket() as s:
            s.settimeout(1)
            return s.connect_ex(("127.0.0.1", self.kafka_port)) == 0

    def start(self, server: str) -> None:
        self.sh("start", server)

    def stop(self, server: str) -> None:
        self.sh("stop", server)

    def kill(self, server: str) -> None:
        self.sh("kill", server)

    def redis_snapshot(self, path: Path) -> None:
        """A point-in-time RDB copy of the running Redis."""
        self.sh("redis-snapshot", str(path))

    def redis_restore(self, path: Path) -> None:
        """Stop Redis, replace its data with the snapshot, start it."""
        self.sh("redis-restore", str(path))


@contextlib.contextmanager
def private_redis(directory: Path) -> Iterator[StackControl]:
    """A ``redis-server`` of our own on a free port (started with ``ops/stack.sh start
    redis`` in a throw-away stack folder), stopped afterwards: a Redis the small suite may
    restart and roll back while the developer's stack keeps running."""
    stack = StackControl(
        directory,
        kafka_port=free_port(),
        controller_port=free_port(),
        redis_port=free_port(),
    )
    stack.start("redis")
    try:
        yield stack
    finally:
        stack.sh("stop", "redis")


# ---------------------------------------------------------------------------- names ---


@dataclass
class Names:
    """Topics, group, key prefix and instance ids unique to one scenario."""

    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:10])

    @property
    def input(self) -> str:
        return f"chaos-events-{self.suffix}"

    @property
    def output(self) -> str:
        return f"chaos-changes-{self.suffix}"

    @property
    def dlq(self) -> str:
        return f"chaos-dlq-{self.suffix}"

    @property
    def forget(self) -> str:
        return f"chaos-forget-{self.suffix}"

    @property
    def tiers(self) -> str:
        return f"chaos-tiers-{self.suffix}"

    @property
    def group(self) -> str:
        return f"chaos-group-{self.suffix}"

    @property
    def prefix(self) -> str:
        return f"chaos-{self.suffix}"

    def instance(self, name: str) -> str:
        return f"chaos-{self.suffix}-{name}"

    def env(self, endpoints: Endpoints, **extra: str) -> dict[str, str]:
        """The service's settings for this scenario (``TIERSTREAM_*``)."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("TIERSTREAM_") or k.startswith("TIERSTREAM_TEST_")
        }
        env.update(
            TIERSTREAM_KAFKA_BOOTSTRAP=endpoints.kafka,
            TIERSTREAM_REDIS_URL=endpoints.redis,
            TIERSTREAM_GROUP_ID=self.group,
            TIERSTREAM_INPUT_TOPIC=self.input,
            TIERSTREAM_OUTPUT_TOPIC=self.output,
            TIERSTREAM_DLQ_TOPIC=self.dlq,
            TIERSTREAM_FORGET_TOPIC=self.forget,
            TIERSTREAM_TIERS_TOPIC=self.tiers,
            TIERSTREAM_KEY_PREFIX=self.prefix,
            TIERSTREAM_METRICS_PORT="0",
        )
        env.update(extra)
        return env


# ---------------------------------------------------------------------------- kafka ---

# Admin calls run in a child process: kafka-python's admin client can leave a socket open
# after close(), which this process's "warnings are errors" would report in a later test.
_CREATE_TOPIC = """
import sys
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
admin = KafkaAdminClient(bootstrap_servers=sys.argv[1])
admin.create_topics([NewTopic(sys.argv[2], int(sys.argv[3]), 1)])
admin.close()
"""


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """Create ``topic`` with ``partitions`` partitions."""
    done = subprocess.run(
        [sys.executable, "-c", _CREATE_TOPIC, bootstrap, topic, str(partitions)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise HarnessError(f"creating {topic}: {done.stderr}")


def read_topic(
    kafka: KafkaConnection | str, topic: str, *, settle_s: float = 60.0
) -> list[InputRecord]:
    """Every record of ``topic`` from the beginning to the end offsets seen now (``kafka``:
    a bootstrap list, or a connection with its TLS and SASL settings)."""
    consumer = KafkaConsumer(
        **KafkaConnection.of(kafka).config(
            KafkaConsumer,
            enable_auto_commit=False,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
        )
    )
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
                raise HarnessError(f"reading {topic} did not reach its end offsets {end}")
            for tp, recs in consumer.poll(timeout_ms=500).items():
                out.extend(
                    InputRecord(tp.topic, tp.partition, r.offset, r.timestamp, r.key, r.value)
                    for r in recs
                    if r.offset < end[tp]
                )
        return out
    finally:
        consumer.close()


def end_offsets(kafka: KafkaConnection | str, topic: str) -> dict[int, int]:
    """The next offset per partition of ``topic`` now: what every writer appended, the
    service's own records (forwarded forget requests) included."""
    consumer = KafkaConsumer(**KafkaConnection.of(kafka).config(KafkaConsumer))
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        return {tp.partition: off for tp, off in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int | None]:
    """The group's committed offset per partition of ``topic``."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        return {p: consumer.committed(TopicPartition(topic, p)) for p in sorted(parts)}
    finally:
        consumer.close(autocommit=False)


class Producer:
    """Produces ``records`` (key, value) to ``topic`` in a background thread, at ``rate``
    records per second (None: as fast as it can), idempotent with ``acks=all``, so a
    broker restart neither loses nor doubles input. ``placed[i]`` is where record ``i``
    landed (partition, offset) once acknowledged; ``acked_end`` the next offset per
    partition."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        records: Sequence[tuple[bytes | None, bytes]],
        *,
        rate: float | None,
        timeline: Timeline | None = None,
        acked_end: dict[int, int] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.records = records
        self.rate = rate
        self.timeline = timeline
        self.placed: list[tuple[int, int] | None] = [None] * len(records)
        #: Next offset per partition, acknowledged (shared by the producers of one topic).
        self.acked_end: dict[int, int] = acked_end if acked_end is not None else {}
        self.errors: list[str] = []
        self.sent = 0
        self.finished_at: float | None = None
        self._thread = threading.Thread(target=self._run, name="producer", daemon=True)

    def start(self) -> Producer:
        self._thread.start()
        return self

    @property
    def done(self) -> bool:
        return self.finished_at is not None

    def join(self, timeout: float) -> None:
        """Wait until every record is acknowledged; HarnessError if not in time."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise HarnessError(f"producing to {self.topic}: still running after {timeout:.0f}s")
        if self.errors:
            raise HarnessError(f"producing to {self.topic} failed: {self.errors[:3]}")

    def _ack(self, index: int) -> Callable[[Any], None]:
        def done(md: Any) -> None:
            self.placed[index] = (md.partition, md.offset)
            if md.offset + 1 > self.acked_end.get(md.partition, 0):
                self.acked_end[md.partition] = md.offset + 1

        return done

    def _run(self) -> None:
        producer = KafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=10,
            batch_size=256 * 1024,
            max_request_size=4 * 1024 * 1024,
            client_id="chaos-producer",
        )
        try:
            start = time.monotonic()
            step = 0.05
            for i, (key, value) in enumerate(self.records):
                if self.rate:
                    due = start + i / self.rate
                    ahead = due - time.monotonic()
                    if ahead > step:
                        time.sleep(ahead)
                fut = producer.send(self.topic, key=key, value=value)
                fut.add_callback(self._ack(i))
                fut.add_errback(lambda exc: self.errors.append(repr(exc)))
                self.sent = i + 1
            producer.flush(timeout=300)
        except Exception as exc:  # reported by join()
            self.errors.append(repr(exc))
        finally:
            producer.close(timeout=30)
            self.finished_at = time.monotonic()
            if self.timeline:
                self.timeline.note(f"producer done: {self.sent} records to {self.topic}")


# ---------------------------------------------------------------------------- redis ---


class RedisView:
    """Reads a deployment's keys (``consumer/service/keys.py``) without changing them."""

    def __init__(self, url: str, prefix: str, topic: str, partitions: int) -> None:
        self.url = url
        self.keys = KeySpace(prefix)
        self.prefix = prefix
        self.topic = topic
        self.partitions = partitions

    @contextlib.contextmanager
    def client(self) -> Iterator[redis.Redis]:
        r = redis.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=2)
        try:
            yield r
        finally:
            r.close()

    def progress(self) -> tuple[dict[int, int], dict[int, int]]:
        """Applied offset (-1: none) and outbox length, per partition."""
        with self.client() as r:
            pipe = r.pipeline(transaction=False)
            pipe.mget([self.keys.applied(self.topic, p) for p in range(self.partitions)])
            for p in range(self.partitions):
                pipe.llen(self.keys.outbox(self.topic, p))
            res = pipe.execute()
        applied = {p: int(v) if v is not None else -1 for p, v in enumerate(res[0])}
        outbox = {p: int(n) for p, n in enumerate(res[1:])}
        return applied, outbox

    def user_states(self) -> dict[str, bytes]:
        """Every user's stored state, by user id."""
        out: dict[str, bytes] = {}
        with self.client() as r:
            keys = [_text(k) for k in r.scan_iter(match=self.keys.all_users, count=2000)]
            keys = [k for k in keys if self.keys.parse_user(k)]
            for i in range(0, len(keys), 2000):
                chunk = keys[i : i + 2000]
                for k, v in zip(chunk, r.mget(chunk), strict=True):
                    home = self.keys.parse_user(k)
                    if v is not None and home is not None:
                        assert home[2] not in out, f"user {home[2]} is stored twice"
                        out[home[2]] = v if isinstance(v, bytes) else v.encode()
        return out

    def populations(self) -> tuple[dict[int, dict[str, int]], dict[int, dict[str, int]]]:
        """Per partition, the tier population Redis counted (tiers with nobody left out)
        and the one its stored users' tiers make."""
        counted: dict[int, dict[str, int]] = {}
        found: dict[int, dict[str, int]] = {p: {} for p in range(self.partitions)}
        with self.client() as r:
            for p in range(self.partitions):
                raw = r.hgetall(self.keys.populations(self.topic, p))
                counted[p] = {_text(t): int(n) for t, n in raw.items() if int(n)}
            keys = [_text(k) for k in r.scan_iter(match=self.keys.all_users, count=2000)]
            for i in range(0, len(keys), 2000):
                chunk = keys[i : i + 2000]
                for k, v in zip(chunk, r.mget(chunk), strict=True):
                    home = self.keys.parse_user(k)
                    if v is not None and home is not None and home[0] == self.topic:
                        tier = state_json(v)["tier"]
                        found[home[1]][tier] = found[home[1]].get(tier, 0) + 1
        return counted, found

    def mentions(self, user_id: str) -> list[str]:
        """Every key under the prefix that names ``user_id``, or holds it as a member,
        element or value (timers, outboxes, sets, strings): what is left of a user."""
        found: list[str] = []
        with self.client() as r:
            for item in r.scan_iter(match=f"{self.prefix}:*", count=2000):
                raw = item if isinstance(item, bytes) else item.encode()
                key = raw.decode(errors="replace")
                if user_id in key:
                    found.append(f"key {key} (ttl {r.ttl(raw)} s)")
                else:
                    found.extend(_holds(r, raw, key, user_id))
        return found


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _holds(r: redis.Redis, raw: bytes, key: str, user_id: str) -> list[str]:
    """How the key ``raw`` (not named after the user) holds ``user_id``, if it does."""
    needle = user_id.encode()
    kind = _text(r.type(raw))
    if kind == "zset":
        return [f"member {user_id} of zset {key}"] if r.zscore(raw, user_id) is not None else []
    if kind == "set":
        return [f"member {user_id} of set {key}"] if r.sismember(raw, user_id) else []
    if kind == "list":
        hits = sum(needle in e for e in r.lrange(raw, 0, -1))
        return [f"{hits} element(s) of list {key} mention {user_id}"] if hits else []
    if kind == "string":
        return [f"value of {key} mentions {user_id}"] if needle in (r.get(raw) or b"") else []
    if kind == "hash":
        fields = r.hgetall(raw).items()
        return (
            [f"a field of hash {key} mentions {user_id}"]
            if any(needle in f or needle in v for f, v in fields)
            else []
        )
    return []


def shuffled(rng: random.Random, items: Sequence[Any]) -> list[Any]:
    """A seeded permutation of ``items``."""
    out = list(items)
    rng.shuffle(out)
    return out
