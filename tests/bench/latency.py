"""Event-to-tier-change latency of a running ``tierstream run`` at a steady offered rate.

Every event is a new user's first (so every event gives a tier change, the user's first
tier), produced at a steady rate into a 4-partition input topic. The latency of an event
is the output record's time minus the input record's time, both Kafka timestamps from
one machine's clock:

- the input record's ``CreateTime``: the wall clock read when the generator makes the
  event and hands it to the client, the moment an upstream system emits the event (kept
  by the generator: the broker stamps the input topic's records itself, below);
- the output record's ``LogAppendTime``: the bench creates the tier-change topic before
  the service starts, with ``message.timestamp.type=LogAppendTime``, so the broker stamps
  every change when it appends it (the service's own creation of the topic then finds it
  there). Each change's ``timestamp_type`` is checked to be log-append time: the figure
  includes the publish, not only the decision.

The input topic is stamped ``LogAppendTime`` too (the service reads a record's Kafka
timestamp only into a dead letter), and read back once the changes are in: each event's
latency then splits into the time until the broker appended the event (the load
generator's send, the broker) and the time from there to its change's append (the
service's fetch, batch and publish). The producer's own CreateTimes are kept apart.

The load generator runs on the machine it measures: while the measured stream is
produced, the bench notes the CPU of its own process, of the instances and what the
machine left idle (``Latency.cpu_*``), so that a reader sees whether the machine had
room (docs/performance.md, "What the machine has left at 5,000 new users a second").

The service is started first and warmed up (a few events whose changes must come out),
then the steady stream runs for the given seconds; the bench waits for every change and
stops the service with SIGTERM (its peak memory comes from ``wait4``). With several
instances in one group, the warm-up also waits until each has acquired partitions and
the group has settled (a second warm-up whose changes must come out after it), so that
no rebalance falls in the measured stream.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from consumer.service.kafka_io import ensure_topics
from consumer.service.partitioning import partition_of
from consumer.service.record_appender import appender
from tests.bench import processes, redis_memory
from tests.bench.contenders import service_env
from tests.bench.workloads import PARTITIONS, unique

#: The load generator's producer waits this long to fill a request (Apache Kafka's
#: producer default since 4.0). It shares the machine with the service: at 5,000 events/s
#: and 1 ms it sent a request a millisecond and took half a core (docs/performance.md,
#: "What the machine has left at 5,000 new users a second"). The wait is in the measured
#: latency (the event's CreateTime is taken before it).
LINGER_MS = 5
#: Events before the measured stream, whose changes show the service is consuming.
WARM_UP = 200
#: How many of the slowest events :class:`Latency` names.
WORST = 5
#: Kafka's code for a broker-stamped timestamp (ConsumerRecord.timestamp_type).
LOG_APPEND_TIME = 1


@dataclass(frozen=True)
class Latency:
    offered: float  #: events/s asked for
    achieved: float  #: events/s the producer kept up
    events: int
    changes: int  #: of those events' tier changes, how many came out
    p50_ms: float
    p99_ms: float
    max_ms: float
    max_rss_mb: float  #: the largest instance's
    #: The slowest events' CreateTimes (s, the wall clock), latencies and the part of
    #: them before the broker appended the event (ms), slowest last.
    worst: tuple[tuple[float, int, int], ...] = ()
    #: p99 of the time until the broker appended the events, and of the time from there
    #: to their changes' append (each its own quantile: they need not add up).
    p99_to_broker_ms: float = 0.0
    p99_after_broker_ms: float = 0.0
    #: While the measured stream was produced, in cores (CPU-seconds a second): the load
    #: generator's process (the bench's own, its producer's thread included), the
    #: service's instances together, and what the machine left idle. They share the
    #: machine: a saturated machine makes tails of its own.
    cpu_generator: float = 0.0
    cpu_service: float = 0.0
    cpu_idle: float = 0.0

    def parts(self) -> str:
        """The latency's two parts and the machine's CPU, as the benches print them.

        >>> m = Latency(5000, 5000, 1, 1, 20, 90, 120, 80, (), 10, 85, 0.3, 1.2, 0.1)
        >>> for part in m.parts().split("; "):
        ...     print(part)
        p99 until the broker appended the event 10 ms, from there 85
        CPU in cores: generator 0.30, service 1.20, idle 0.10
        """
        return (
            f"p99 until the broker appended the event {self.p99_to_broker_ms:,.0f} ms, "
            f"from there {self.p99_after_broker_ms:,.0f}; CPU in cores: generator "
            f"{self.cpu_generator:.2f}, service {self.cpu_service:.2f}, idle {self.cpu_idle:.2f}"
        )


class _AppendTimes:
    """Reads a topic stamped ``LogAppendTime`` from its start: each key's first record's
    append time (the tier changes; the input events)."""

    def __init__(self, kafka: str, topic: str) -> None:
        self._consumer = KafkaConsumer(bootstrap_servers=kafka, enable_auto_commit=False)
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        self._consumer.assign(tps)
        self._consumer.seek_to_beginning(*tps)
        self.appended: dict[bytes, int] = {}

    def read(self, want: set[bytes], deadline: float) -> None:
        """Poll until every user in ``want`` has a change, or ``deadline`` (monotonic)."""
        while not want <= self.appended.keys() and time.monotonic() < deadline:
            for batch in self._consumer.poll(timeout_ms=500).values():
                for r in batch:
                    if r.timestamp_type != LOG_APPEND_TIME:
                        raise RuntimeError(f"{r.topic} is not stamped LogAppendTime")
                    self.appended.setdefault(r.key, r.timestamp)

    def close(self) -> None:
        self._consumer.close()


def _event(run: str, user: str, now_ms: int) -> bytes:
    return orjson.dumps(
        {
            "event_id": f"{run}-{user}",
            "user_id": user,
            "event_type": "page_view",
            "timestamp": now_ms,
        }
    )


#: The generator's events: each user, its key, and the partition Kafka's default
#: partitioner picks for it (the same murmur2), made before the stream starts.
Keyed = tuple[list[str], list[bytes], list[int]]


def _keyed(stem: str, count: int) -> Keyed:
    users = [f"{stem}{i:08d}" for i in range(count)]
    return users, [user.encode() for user in users], [partition_of(u, PARTITIONS) for u in users]


def _produce(
    producer: KafkaProducer, topic: str, run: str, keyed: Keyed, rate: float
) -> tuple[dict[bytes, int], float]:
    """The ``keyed`` new users' events at ``rate`` per second; their CreateTimes, the
    achieved rate.

    The records go to their partitions (:func:`_keyed`, computed before the stream and
    outside its CPU figures) and are handed to the producer's accumulator as the service
    hands its outputs (:mod:`consumer.service.record_appender`): the generator shares the
    machine it measures, and ``send``'s per-record work (its murmur2 in Python among it)
    took some 70 µs of a core per event there (docs/performance.md, "A lighter load
    generator")."""
    users, keys, parts = keyed
    count = len(users)
    producer.partitions_for(topic)  # the metadata the accumulator's partitions need
    append = appender(producer, {topic: []})
    created: dict[bytes, int] = {}
    t0 = time.monotonic()
    sent = 0
    while sent < count:
        due = min(count, int((time.monotonic() - t0) * rate) + 1)
        while sent < due:
            user, key = users[sent], keys[sent]
            now_ms = int(time.time() * 1000)
            value = _event(run, user, now_ms)
            if append is None or append(topic, parts[sent], key, value) is None:
                producer.send(topic, key=key, value=value, timestamp_ms=now_ms)
            created[key] = now_ms
            sent += 1
        time.sleep(0.002)
    achieved = count / max(time.monotonic() - t0, 1e-9)
    producer.flush()
    return created, achieved


def _cpu(services: list[processes.Child]) -> tuple[float, float, float]:
    """CPU-seconds so far: this process (the load generator), the services, the machine's
    idle time."""
    return (
        time.process_time(),
        sum(processes.cpu_seconds(s.pid) for s in services),
        processes.machine_idle_seconds(),
    )


def _quantile(sorted_ms: list[int], q: float) -> float:
    """Nearest-rank quantile."""
    return float(sorted_ms[min(len(sorted_ms) - 1, max(0, round(q * len(sorted_ms)) - 1))])


#: After every instance has acquired partitions: time for the group to settle.
SETTLE_S = 5.0


def _settle(children: list[processes.Child], deadline: float) -> None:
    """Wait until every instance has logged an acquisition of partitions, then a little
    longer for the group's last rebalance to finish."""
    while not all("partitions acquired" in c.stderr_so_far() for c in children):
        if time.monotonic() > deadline:
            raise RuntimeError("an instance acquired no partition during the warm-up")
        time.sleep(0.2)
    time.sleep(SETTLE_S)


def _warm_up(
    producer: KafkaProducer, reader: _AppendTimes, topic: str, run: str, stem: str
) -> None:
    """:data:`WARM_UP` events whose changes must all come out."""
    warm, _ = _produce(producer, topic, run, _keyed(stem, WARM_UP), WARM_UP / 2)
    reader.read(set(warm), time.monotonic() + 180)
    if not set(warm) <= reader.appended.keys():
        raise RuntimeError("the service published no tier change for the warm-up events")


def measure(
    kafka: str,
    redis: str,
    run: str,
    logs: Path,
    *,
    rate: float,
    seconds: float,
    instances: int = 1,
    extra_env: Mapping[str, str] | None = None,
    module: str = "consumer.cli",
) -> Latency:
    """Start ``instances`` of the service in one group (``python -m module run``, with
    ``extra_env`` added to its environment), offer ``rate`` events/s for ``seconds``,
    measure, stop them."""
    topic = unique(run, "latency-in")
    env = {
        **service_env(kafka, redis, topic, run, unique(run, "latency-state")),
        **(extra_env or {}),
    }
    changes_topic = env["TIERSTREAM_OUTPUT_TOPIC"]
    stamped = {"message.timestamp.type": "LogAppendTime"}
    ensure_topics(
        kafka,
        [topic, changes_topic],
        partitions=PARTITIONS,
        configs={topic: stamped, changes_topic: stamped},
    )
    services = [
        processes.Child(
            f"tierstream-latency-{int(rate)}-{instances}x{i}",
            processes.python(module, "run"),
            env={**env, "TIERSTREAM_INSTANCE_ID": f"{run}-latency-{i}"},
            logs=logs,
        )
        for i in range(instances)
    ]
    producer = KafkaProducer(bootstrap_servers=kafka, linger_ms=LINGER_MS)
    reader = _AppendTimes(kafka, changes_topic)
    try:
        _warm_up(producer, reader, topic, run, "warm")
        if instances > 1:
            _settle(services, time.monotonic() + 180)
            _warm_up(producer, reader, topic, run, "settled")
        count = round(rate * seconds)
        keyed = _keyed("user", count)
        cpu_start, began = _cpu(services), time.monotonic()
        created, achieved = _produce(producer, topic, run, keyed, rate)
        took = time.monotonic() - began
        cpu = [(b - a) / took for a, b in zip(cpu_start, _cpu(services), strict=True)]
        reader.read(set(created), time.monotonic() + max(120.0, 10 * seconds))
        events = _AppendTimes(kafka, topic)
        try:
            events.read(set(created), time.monotonic() + 120.0)
        finally:
            events.close()
    finally:
        producer.close()
        reader.close()
        for service in services:
            service.terminate()
    done = [s.reap(time.monotonic() - s.started + 60) for s in services]
    for d in done:
        processes.check(d)
    redis_memory.delete_prefix(redis, env["TIERSTREAM_KEY_PREFIX"])
    arrived = events.appended
    timed = sorted(
        (
            (t / 1000, reader.appended[k] - t, arrived.get(k, t) - t)
            for k, t in created.items()
            if k in reader.appended
        ),
        key=lambda w: w[1],
    )
    late = [ms for _, ms, _ in timed]
    if not late:
        raise RuntimeError("no tier change came out for the measured events")
    before = sorted(b for _, _, b in timed)
    after = sorted(ms - b for _, ms, b in timed)
    return Latency(
        rate,
        achieved,
        count,
        len(late),
        _quantile(late, 0.50),
        _quantile(late, 0.99),
        float(late[-1]),
        max(d.max_rss_mb for d in done),
        tuple(timed[-WORST:]),
        _quantile(before, 0.99),
        _quantile(after, 0.99),
        *cpu,
    )
