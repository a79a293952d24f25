"""The ways the throughput bench consumes one input topic, each in processes of its own:
the raw client (:mod:`tests.bench.raw_client`), the minimal Quix Streams app
(:mod:`tests.bench.quix_app`), ``tierstream run --stop-when-idle`` with one or more
instances in one consumer group (learning on, Kafka + Redis), and the same with the
engine cut down to the Quix app's work (:mod:`tests.bench.floor_service`: the floor of
the service's exactly-once path).

How each is timed:

- raw client and Quix Streams: their own clock, from the first record received to the
  last one processed (Quix Streams: to its final commit), so their start-up, group join
  and partition assignment are left out;
- ``tierstream run``: the wall time of the instances (started together, until the last
  one exits) minus the wall time of the same instances on an empty topic of as many
  partitions (start-up, group join, the ``--stop-when-idle`` wait): what is left is the
  time the records cost. The median of several empty runs is subtracted.

CPU time is counted over the same spans (the raw client and Quix Streams measure their
own, all threads; the service's is its processes' user + system time from ``wait4``
minus the empty runs'), so events per CPU-second compares the contenders' own work even
when other processes take the machine's cores (the servers' CPU is in none of them).
"""

from __future__ import annotations

import re
import shutil
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from tests.bench import processes
from tests.bench.workloads import end_offsets, unique

#: ``--stop-when-idle`` of every ``tierstream run`` (the empty runs take it out again).
IDLE_S = 2.0
#: The longest any one contender may take before it counts as hung.
TIMEOUT_S = 3600.0
_SUMMARY = re.compile(r"tierstream: (\d+) records in \d+ batches .*; (\d+) tier changes;")


@dataclass(frozen=True)
class Throughput:
    """One contender on one topic."""

    name: str
    records: int
    seconds: float  #: the time the records cost (see the module docstring)
    cpu_s: float  #: the CPU time they cost, over the same span
    wall_s: float  #: every process's start to the last exit, start-up included
    max_rss_mb: list[float]  #: each process's peak resident memory
    outputs: int  #: tier changes (records the Quix app produced; 0 for the raw client)
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else float("nan")

    @property
    def rate_per_cpu(self) -> float:
        return self.records / self.cpu_s if self.cpu_s > 0 else float("nan")


def raw_client(kafka: str, topic: str, logs: Path) -> Throughput:
    """kafka-python poll + ``orjson.loads`` of every record, to the end of the topic."""
    done = processes.run(
        "raw-client",
        processes.python("tests.bench.raw_client", kafka, topic),
        env=processes.environ(),
        logs=logs,
        timeout_s=TIMEOUT_S,
    )
    out = orjson.loads(done.stdout.strip().splitlines()[-1])
    if not out["crc32c"]:
        raise RuntimeError("kafka-python has no crc32c C extension here: pip install crc32c")
    return Throughput(
        "raw kafka-python poll + orjson.loads",
        out["records"],
        out["seconds"],
        out["cpu_s"],
        done.wall_s,
        [done.max_rss_mb],
        0,
    )


def quix(kafka: str, topic: str, run: str, logs: Path) -> Throughput:
    """The minimal Quix Streams app, in a fresh consumer group and state directory."""
    state = Path(tempfile.mkdtemp(prefix=f"{run}-quix-"))
    ends = {str(p): e for p, e in end_offsets(kafka, topic).items()}
    try:
        done = processes.run(
            "quix-app",
            processes.python(
                "tests.bench.quix_app",
                kafka,
                topic,
                unique(run, "quix-out"),
                unique(run, "quix-group"),
                str(state),
                orjson.dumps(ends).decode(),
            ),
            env=processes.environ(),
            logs=logs,
            timeout_s=TIMEOUT_S,
        )
    finally:
        shutil.rmtree(state, ignore_errors=True)
    out = orjson.loads(done.stdout.strip().splitlines()[-1])
    return Throughput(
        "Quix Streams app (RocksDB state + changelog, produce on change)",
        out["records"],
        out["seconds"],
        out["cpu_s"],
        done.wall_s,
        [done.max_rss_mb],
        out["outputs"],
    )


@dataclass(frozen=True)
class ServiceRun:
    """What ``tierstream run --stop-when-idle`` instances did on one topic."""

    wall_s: float
    cpu_s: float  #: all instances' CPU time
    max_rss_mb: list[float]
    records: int
    tier_changes: int
    prefix: str  #: their Redis key prefix (measured, then deleted, by the caller)
    #: (samples, labels) the group's model learnt, as the caller measured them.
    learnt: tuple[int, int] = (0, 0)


def service_env(kafka: str, redis: str, topic: str, run: str, prefix: str) -> dict[str, str]:
    """Environment of ``tierstream run`` on ``topic``: a fresh group, output topics and key
    prefix, no metrics port; the default tier config, learning on."""
    return processes.environ(
        TIERSTREAM_KAFKA_BOOTSTRAP=kafka,
        TIERSTREAM_REDIS_URL=redis,
        TIERSTREAM_INPUT_TOPIC=topic,
        TIERSTREAM_GROUP_ID=unique(run, "group"),
        TIERSTREAM_OUTPUT_TOPIC=unique(run, "changes"),
        TIERSTREAM_DLQ_TOPIC=unique(run, "dlq"),
        TIERSTREAM_TIERS_TOPIC=unique(run, "tiers"),
        TIERSTREAM_FORGET_TOPIC=unique(run, "forget"),
        TIERSTREAM_KEY_PREFIX=prefix,
        TIERSTREAM_METRICS_PORT="0",
    )


def service(
    kafka: str,
    redis: str,
    topic: str,
    run: str,
    logs: Path,
    *,
    instances: int,
    idle_s: float = IDLE_S,
    module: str = "consumer.cli",
) -> ServiceRun:
    """``instances`` x ``tierstream run --stop-when-idle idle_s`` in one group, started
    together (``python -m module run``: :mod:`tests.bench.floor_service` for the floor)."""
    prefix = unique(run, "state")
    env = service_env(kafka, redis, topic, run, prefix)
    children = [
        processes.Child(
            f"tierstream-{prefix}-{i}",
            processes.python(module, "run", "--stop-when-idle", str(idle_s)),
            env={**env, "TIERSTREAM_INSTANCE_ID": f"{prefix}-{i}"},
            logs=logs,
        )
        for i in range(instances)
    ]
    done = [c.reap(TIMEOUT_S) for c in children]
    for d in done:
        processes.check(d)
    records = changes = 0
    for d in done:
        found = _SUMMARY.search(d.stderr)
        if found is None:
            raise RuntimeError(f"{d.name} printed no summary line:\n{d.stderr[-2000:]}")
        records += int(found.group(1))
        changes += int(found.group(2))
    return ServiceRun(
        max(d.wall_s for d in done),
        sum(d.cpu_s for d in done),
        [d.max_rss_mb for d in done],
        records,
        changes,
        prefix,
    )


def tierstream(name: str, full: ServiceRun, empty: list[ServiceRun]) -> Throughput:
    """The service's throughput: a run on the workload minus the median empty run."""
    idle = statistics.median(e.wall_s for e in empty)
    idle_cpu = statistics.median(e.cpu_s for e in empty)
    return Throughput(
        name,
        full.records,
        full.wall_s - idle,
        full.cpu_s - idle_cpu,
        full.wall_s,
        full.max_rss_mb,
        full.tier_changes,
        {
            "empty_run_s": idle,
            "empty_run_cpu_s": idle_cpu,
            "samples": full.learnt[0],
            "labels": full.learnt[1],
        },
    )
