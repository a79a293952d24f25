"""The streams the throughput bench runs, and the topics they go into.

Every stream comes from the project's generator (:mod:`consumer.demo.synthetic`, what
``tierstream generate`` writes) with :data:`SEED`, a seed no test uses: the service is
measured on data it was not tuned on. No malformed records: the Quix Streams app and the
raw client have no dead-letter path, and all contenders must do the same job.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from consumer.demo.synthetic import GeneratorConfig, generate
from consumer.service.kafka_io import ensure_topics, produce_records

#: The generator's seed for every bench stream (the tests use others).
SEED = 1207
#: Input partitions, as in the issue: enough for two instances to share.
PARTITIONS = 4


@dataclass(frozen=True)
class Workload:
    """A stream: ``events`` records of ``users`` users over ``days`` of event time."""

    name: str
    users: int
    events: int
    days: int
    #: Rounds of the Quix app and the service, alternated, whose median the table shows.
    runs: int = 1

    def describe(self) -> str:
        return f"{self.users:,} users, {self.events:,} events over {self.days} days"

    def config(self) -> GeneratorConfig:
        return GeneratorConfig(users=self.users, events=self.events, seed=SEED, days=self.days)


#: The two workloads of the issue: a dense stream, and a sparse catch-up over half a year.
#: The dense one's runs take seconds each and two instances' spread widely from run to
#: run (the group's start, the shared machine): three rounds, the median reported.
FULL = (
    Workload("dense", users=10_000, events=300_000, days=30, runs=3),
    Workload("sparse catch-up", users=50_000, events=200_000, days=180),
)
#: Users as active as a shop's regulars, for a year: some 60 events each, so each stored
#: state carries what an active user keeps (``python -m tests.bench.state_size``).
ACTIVE_YEAR = Workload("active year", users=5_000, events=300_000, days=365)
QUICK = (
    Workload("dense", users=300, events=6_000, days=30, runs=2),
    Workload("sparse catch-up", users=1_000, events=4_000, days=180),
)


def memory_workload(users: int) -> Workload:
    """The memory rows: two events per user over 30 days, so every size has the same shape."""
    return Workload(f"memory {users:,}", users=users, events=2 * users, days=30)


def run_id() -> str:
    """The name of one bench run: every topic, group and key prefix it makes contains it."""
    return f"bench{uuid.uuid4().hex[:8]}"


def unique(run: str, stem: str) -> str:
    """A topic, group or key-prefix name of run ``run`` that no other part of it uses."""
    return f"{run}-{stem}-{uuid.uuid4().hex[:6]}"


def fill(kafka: str, topic: str, workload: Workload) -> float:
    """Create ``topic`` with :data:`PARTITIONS` and produce the workload into it, keyed by
    user id (as ``tierstream generate --topic`` does); seconds taken."""
    t0 = time.monotonic()
    ensure_topics(kafka, [topic], partitions=PARTITIONS)
    n = produce_records(
        kafka, topic, ((r.key, r.value) for r in generate(workload.config())), partitions=PARTITIONS
    )
    assert n == workload.events, (n, workload.events)
    assert sum(end_offsets(kafka, topic).values()) == workload.events
    return time.monotonic() - t0


def end_offsets(kafka: str, topic: str) -> dict[int, int]:
    """The end offset of each partition of ``topic``."""
    consumer = KafkaConsumer(bootstrap_servers=kafka, enable_auto_commit=False)
    try:
        parts = sorted(consumer.partitions_for_topic(topic) or ())
        ends = consumer.end_offsets([TopicPartition(topic, p) for p in parts])
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        consumer.close()


def delete_topics(kafka: str, run: str) -> None:
    """Delete every topic of bench run ``run`` (inputs, outputs, Quix changelogs), so a
    long bench does not fill the broker's disk."""
    admin = KafkaAdminClient(bootstrap_servers=kafka)
    try:
        doomed = [t for t in admin.list_topics() if run in t]
        if doomed:
            admin.delete_topics(doomed)
    finally:
        admin.close()
