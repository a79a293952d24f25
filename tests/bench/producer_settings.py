"""What the producer's settings cost: tier changes published the way the service does
(a batch of sends, then ``flush``, then every acknowledgement), under a few producer
configurations, against a real broker. The figures behind the publisher's settings in
docs/performance.md ("Publishing a batch")::

    python -m tests.bench.producer_settings --kafka 127.0.0.1:9092

Each configuration publishes the same 60,000 records (900-byte values keyed by 60,000
distinct user ids, as a stream of new users makes: every event a tier change) in
batches of 1,000 to a fresh 4-partition topic, ``acks=all`` with idempotence as the
service's publisher; the configurations take turns, three rounds, and the median is
printed: records per second of wall time and per CPU-second of the process (the
producer's sender thread included).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence

from kafka import KafkaProducer

import tests.bench  # noqa: F401  (one BLAS thread, as in every bench)
from consumer.service.kafka_io import Publisher, ensure_topics
from consumer.service.records import OutputRecord

RECORDS = 60_000
BATCH = 1_000
VALUE = b"x" * 900


def _keys() -> list[bytes]:
    return [f"u{i:08d}".encode() for i in range(RECORDS)]


def _by_producer(kafka: str, **config: int) -> Callable[[str], None]:
    """kafka-python's producer as configured, its own partitioner choosing."""

    def run(topic: str) -> None:
        producer = KafkaProducer(
            bootstrap_servers=kafka, acks="all", enable_idempotence=True, **config
        )
        producer.send(topic, key=b"warm-up", value=VALUE).get(timeout=30)
        keys = _keys()
        for start in range(0, RECORDS, BATCH):
            futures = [
                producer.send(topic, key=k, value=VALUE) for k in keys[start : start + BATCH]
            ]
            producer.flush()
            for future in futures:
                future.get(timeout=0)
        producer.close()

    return run


def _by_publisher(kafka: str) -> Callable[[str], None]:
    """The service's own :class:`Publisher` (its settings, its partition routes)."""

    def run(topic: str) -> None:
        publisher = Publisher(kafka)
        publisher.publish([OutputRecord(topic, b"warm-up", VALUE)])
        records = [OutputRecord(topic, k, VALUE) for k in _keys()]
        for start in range(0, RECORDS, BATCH):
            publisher.publish(records[start : start + BATCH])
        publisher.close()

    return run


def measure(kafka: str, rounds: int) -> list[tuple[str, float, float]]:
    """(configuration, median records/s of wall time, median records per CPU-second)."""
    contenders: dict[str, Callable[[str], None]] = {
        "batch_size 16 KB (default), linger 5 ms, partitioner": _by_producer(kafka, linger_ms=5),
        "batch_size 1 MB, linger 5 ms, partitioner": _by_producer(
            kafka, linger_ms=5, batch_size=1 << 20
        ),
        "batch_size 1 MB, linger 100 ms, partitioner": _by_producer(
            kafka, linger_ms=100, batch_size=1 << 20
        ),
        "the service's Publisher (1 MB, 5 ms, its own partition routes)": _by_publisher(kafka),
    }
    walls: dict[str, list[float]] = {name: [] for name in contenders}
    cpus: dict[str, list[float]] = {name: [] for name in contenders}
    for r in range(rounds):
        for name, run in contenders.items():
            topic = f"bench-producer-{time.time_ns()}"
            ensure_topics(kafka, [topic], partitions=4)
            wall, cpu = time.perf_counter(), time.process_time()
            run(topic)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            walls[name].append(RECORDS / wall)
            cpus[name].append(RECORDS / cpu)
            print(f"round {r + 1}: {name}: {RECORDS / wall:,.0f}/s", file=sys.stderr)
    return [(n, statistics.median(walls[n]), statistics.median(cpus[n])) for n in contenders]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kafka", default="127.0.0.1:9092", help="bootstrap servers")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    rows = measure(args.kafka, args.rounds)
    print("| producer | records/s | records per CPU-second |")
    print("| --- | --- | --- |")
    for name, wall, cpu in rows:
        print(f"| {name} | {wall:,.0f} | {cpu:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
