"""Event-to-tier-change latency of a running ``tierstream run`` at a steady offered rate.

Every event is a new user's first (so every event gives a tier change, the user's first
tier), produced at a steady rate into a 4-partition input topic. The latency of an event
is the output record's time minus the input record's time, both Kafka timestamps from
one machine's clock:

- the input record's ``CreateTime``: the producer sets it explicitly to the wall clock
  when it hands the record to the client, the moment an upstream system emits the event;
- the output record's ``LogAppendTime``: the bench creates the tier-change topic before
  the service starts, with ``message.timestamp.type=LogAppendTime``, so the broker stamps
  every change when it appends it (the service's own creation of the topic then finds it
  there). Each change's ``timestamp_type`` is checked to be log-append time: the figure
  includes the publish, not only the decision.

The service is started first and warmed up (a few events whose changes must come out),
then the steady stream runs for the given seconds; the bench waits for every change and
stops the service with SIGTERM (its peak memory comes from ``wait4``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from consumer.service.kafka_io import ensure_topics
from tests.bench import processes, redis_memory
from tests.bench.contenders import service_env
from tests.bench.workloads import PARTITIONS, unique

#: Events before the measured stream, whose changes show the service is consuming.
WARM_UP = 200
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
    max_rss_mb: float


class _Changes:
    """Reads the tier-change topic from its start: each user's first change's append time."""

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
                        raise RuntimeError("the tier-change topic is not stamped LogAppendTime")
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


def _produce(
    producer: KafkaProducer, topic: str, run: str, stem: str, rate: float, count: int
) -> tuple[dict[bytes, int], float]:
    """``count`` new users' events at ``rate`` per second; their CreateTimes, achieved rate."""
    created: dict[bytes, int] = {}
    t0 = time.monotonic()
    sent = 0
    while sent < count:
        due = min(count, int((time.monotonic() - t0) * rate) + 1)
        while sent < due:
            user = f"{stem}{sent:08d}"
            now_ms = int(time.time() * 1000)
            key = user.encode()
            producer.send(topic, key=key, value=_event(run, user, now_ms), timestamp_ms=now_ms)
            created[key] = now_ms
            sent += 1
        time.sleep(0.002)
    achieved = count / max(time.monotonic() - t0, 1e-9)
    producer.flush()
    return created, achieved


def _quantile(sorted_ms: list[int], q: float) -> float:
    """Nearest-rank quantile."""
    return float(sorted_ms[min(len(sorted_ms) - 1, max(0, round(q * len(sorted_ms)) - 1))])


def measure(
    kafka: str, redis: str, run: str, logs: Path, *, rate: float, seconds: float
) -> Latency:
    """Start the service, offer ``rate`` events/s for ``seconds``, measure, stop it."""
    topic = unique(run, "latency-in")
    env = service_env(kafka, redis, topic, run, unique(run, "latency-state"))
    changes_topic = env["TIERSTREAM_OUTPUT_TOPIC"]
    ensure_topics(kafka, [topic], partitions=PARTITIONS)
    ensure_topics(
        kafka,
        [changes_topic],
        partitions=PARTITIONS,
        configs={changes_topic: {"message.timestamp.type": "LogAppendTime"}},
    )
    service = processes.Child(
        f"tierstream-latency-{int(rate)}",
        processes.python("consumer.cli", "run"),
        env={**env, "TIERSTREAM_INSTANCE_ID": f"{run}-latency"},
        logs=logs,
    )
    producer = KafkaProducer(bootstrap_servers=kafka, linger_ms=1)
    reader = _Changes(kafka, changes_topic)
    try:
        warm, _ = _produce(producer, topic, run, "warm", WARM_UP / 2, WARM_UP)
        reader.read(set(warm), time.monotonic() + 180)
        if not set(warm) <= reader.appended.keys():
            raise RuntimeError("the service published no tier change for the warm-up events")
        count = round(rate * seconds)
        created, achieved = _produce(producer, topic, run, "user", rate, count)
        reader.read(set(created), time.monotonic() + max(120.0, 10 * seconds))
    finally:
        producer.close()
        reader.close()
        service.terminate()
    done = service.reap(time.monotonic() - service.started + 60)
    processes.check(done)
    redis_memory.delete_prefix(redis, env["TIERSTREAM_KEY_PREFIX"])
    late = sorted(reader.appended[k] - t for k, t in created.items() if k in reader.appended)
    if not late:
        raise RuntimeError("no tier change came out for the measured events")
    return Latency(
        rate,
        achieved,
        count,
        len(late),
        _quantile(late, 0.50),
        _quantile(late, 0.99),
        float(late[-1]),
        done.max_rss_mb,
    )
