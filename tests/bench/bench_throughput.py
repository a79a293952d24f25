"""`make bench`: the whole pipeline's throughput, latency and memory, against the client's
ceiling and a minimal Quix Streams app, in one run on the real Kafka + Redis of
``ops/stack.sh`` (docs/performance.md, issue 12).

1. Throughput, for each workload (:mod:`tests.bench.workloads`), on one 4-partition
   topic: the raw kafka-python client, the Quix Streams app, ``tierstream run
   --stop-when-idle`` with 1 and with 2 instances, and the same with the engine cut
   down to the Quix app's work (:mod:`tests.bench.floor_service`: the floor of the
   service's exactly-once path), :mod:`tests.bench.contenders` says how each is timed;
   events/s and the ratio to Quix Streams, each process's max RSS, and the service's
   Redis bytes per user. A workload of several rounds (``Workload.runs``: the dense one)
   runs the Quix app and the service alternately, each service run judged against its
   own round's Quix run, and reports the median run and every round's ratio.
2. Event-to-tier-change latency p50/p99 at steady offered rates (:mod:`tests.bench.latency`).
3. Memory: max RSS of ``tierstream run`` and Redis bytes per user at several user counts
   (:mod:`tests.bench.redis_memory`).

Prints progress lines on stderr and the tables on stdout, and writes them into the
generated section of docs/performance.md (``--doc``). ``--quick`` runs small sizes (the
harness's own test, tests/integration/test_bench_quick.py).
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from consumer.service.kafka_io import ensure_topics
from tests.bench import contenders, latency, redis_memory, report, workloads
from tests.bench.contenders import ServiceRun, Throughput
from tests.bench.processes import say
from tests.bench.redis_memory import RedisUse
from tests.bench.workloads import Workload
from tests.integration.support import KAFKA, REDIS, REPO

SECTION = "bench"
#: The module the floor's instances run, and what their rows add to the service's name.
FLOOR = "tests.bench.floor_service"
FLOOR_NAME = " with the engine cut to the Quix app's work (dedup + feature fold)"
#: The heading of each generated section, when the doc has no such section yet.
HEADINGS = {
    "bench": "## `make bench`: throughput, latency and memory of the live service",
    "bench-memory": "## `make bench-memory`: memory up to a million users",
}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: checks the harness")
    ap.add_argument("--kafka", default=KAFKA, help="bootstrap (TIERSTREAM_TEST_KAFKA)")
    ap.add_argument("--redis", default=REDIS, help="Redis URL (TIERSTREAM_TEST_REDIS)")
    ap.add_argument(
        "--parts",
        default="throughput,latency,memory",
        help="comma-separated: which of throughput, latency, memory to run",
    )
    ap.add_argument("--rates", help="latency: offered events/s, comma-separated")
    ap.add_argument("--latency-seconds", type=float, help="latency: how long each rate runs")
    ap.add_argument(
        "--latency-instances",
        default="1,2",
        help="latency: instance counts in one group, comma-separated (each at every rate)",
    )
    ap.add_argument(
        "--latency-runs",
        type=int,
        help="latency: runs of each rate and instance count; the median run's figures are "
        "reported, with every run's p99 (default 3, 1 with --quick)",
    )
    ap.add_argument("--users", help="memory: user counts, comma-separated (e.g. 10000,1000000)")
    ap.add_argument("--empty-runs", type=int, help="empty tierstream runs per instance count")
    ap.add_argument(
        "--doc",
        type=Path,
        help="write the tables into this file's generated section "
        "(default: docs/performance.md, none with --quick)",
    )
    ap.add_argument("--section", default=SECTION, help="name of the generated section")
    args = ap.parse_args(argv)
    quick = args.quick
    parts = set(args.parts.split(","))
    rates = _numbers(args.rates) or ([200.0, 500.0] if quick else [2000.0, 5000.0])
    seconds = args.latency_seconds or (3.0 if quick else 30.0)
    latency_runs = args.latency_runs or (1 if quick else 3)
    if latency_runs < 1:
        ap.error("--latency-runs must be at least 1")
    users = [int(n) for n in _numbers(args.users)] or ([500] if quick else [10_000, 100_000])
    empty_runs = args.empty_runs or (1 if quick else 3)

    bench = _Bench(args.kafka, args.redis, idle_s=1.0 if quick else contenders.IDLE_S)
    t0 = time.monotonic()
    load_before = report.load()
    redis_before = report.redis_dataset(args.redis)
    commit = report.commit()
    say(f"run {bench.run}: logs in {bench.logs}; load {load_before}")
    sections: list[str] = []
    try:
        if "throughput" in parts:
            empties = bench.empty_runs(empty_runs)
            for w in workloads.QUICK if quick else workloads.FULL:
                sections.append(bench.throughput(w, empties))
        if "latency" in parts:
            counts = [int(n) for n in _numbers(args.latency_instances)]
            sections.append(bench.latency(rates, seconds, counts, latency_runs))
        if "memory" in parts:
            sections.append(bench.memory(users))
    finally:
        workloads.delete_topics(args.kafka, bench.run)
    minutes = (time.monotonic() - t0) / 60
    command = shlex.join(["python", "-m", "tests.bench.bench_throughput", *(argv or sys.argv[1:])])
    head = _header(args.redis, command, commit, load_before, redis_before, minutes)
    text = head + "\n\n" + "\n\n".join(sections)
    print(text)
    doc = args.doc or (None if quick else REPO / "docs" / "performance.md")
    if doc:
        report.write_section(
            doc, args.section, HEADINGS.get(args.section, f"## `{args.section}`"), text
        )
        say(f"wrote the tables into {doc}")
    shutil.rmtree(bench.logs, ignore_errors=True)
    say(f"done in {minutes:.1f} min")
    return 0


def _numbers(text: str | None) -> list[float]:
    return [float(x) for x in text.split(",")] if text else []


def _header(
    redis_url: str, command: str, commit: str, load_before: str, redis_before: str, minutes: float
) -> str:
    facts = "\n".join(f"- {line}" for line in report.machine(redis_url))
    return (
        f"Measured {report.today()} at commit `{commit}` in {minutes:.1f} min:\n\n"
        f"```bash\n{command}\n```\n\n{facts}\n"
        f"- load average (1, 5, 15 min) at the start {load_before}, at the end {report.load()}\n"
        f"- Redis at the start: {redis_before}"
    )


def median_run(runs: Sequence[latency.Latency]) -> latency.Latency:
    """The run whose p99 is the median of ``runs`` (the lower middle one of an even
    count): a 30-second p99 is set by the worst third of a second, so one run says
    more about the machine's stalls than about the service.

    >>> def run(p99: float) -> latency.Latency:
    ...     return latency.Latency(5000.0, 5000.0, 10, 10, 20.0, p99, 400.0, 90.0)
    >>> median_run([run(90.0), run(300.0), run(80.0)]).p99_ms, median_run([run(7.0)]).p99_ms
    (90.0, 7.0)
    """
    return runs[_median_index([r.p99_ms for r in runs])]


@dataclass(frozen=True)
class Ratio:
    """A table row: a contender's run, its ratio to the Quix app, and each run's ratio
    (against its own round's Quix run) when it ran more than once."""

    run: Throughput
    ratio: float
    each: tuple[float, ...] = ()


def _median_index(values: Sequence[float]) -> int:
    """Where the median of ``values`` is (the lower middle one of an even count), over
    the finite ones: a run too short to time (nan) is never the median while another was
    timed.

    >>> _median_index([0.7, 0.9, 0.8]), _median_index([math.nan, 0.5])
    (2, 1)
    >>> _median_index([0.9, math.nan, 0.5]), _median_index([math.nan, math.nan])
    (2, 0)
    """
    timed = [i for i, v in enumerate(values) if math.isfinite(v)] or list(range(len(values)))
    return sorted(timed, key=lambda i: values[i])[(len(timed) - 1) // 2]


def median_rate(runs: Sequence[Throughput]) -> Throughput:
    """The run of median events/s (:func:`_median_index`).

    >>> def run(seconds: float) -> Throughput:
    ...     return Throughput("x", 100, seconds, 1.0, 1.0, [1.0], 0)
    >>> median_rate([run(1.0), run(4.0), run(2.0)]).seconds, median_rate([run(5.0)]).seconds
    (2.0, 5.0)
    >>> median_rate([run(-1.0), run(2.0), run(4.0)]).seconds  # the first too short to time
    4.0
    """
    return runs[_median_index([r.rate for r in runs])]


def median_ratio(runs: Sequence[Throughput], ratios: Sequence[float]) -> Ratio:
    """The run whose ratio to its round's Quix run is the median of ``ratios``
    (:func:`_median_index`), with every run's ratio in the order they ran.

    >>> def run(seconds: float) -> Throughput:
    ...     return Throughput("x", 100, seconds, 1.0, 1.0, [1.0], 0)
    >>> row = median_ratio([run(1.0), run(2.0), run(3.0)], [0.7, 0.9, 0.8])
    >>> row.run.seconds, row.ratio, row.each
    (3.0, 0.8, (0.7, 0.9, 0.8))
    """
    k = _median_index(ratios)
    return Ratio(runs[k], ratios[k], tuple(ratios) if len(runs) > 1 else ())


def _service_name(instances: int, what: str = "") -> str:
    return f"`tierstream run`{what}, {instances} instance{'s' if instances > 1 else ''}"


class _Bench:
    """One bench run: its names, its log directory, and each measurement."""

    def __init__(self, kafka: str, redis_url: str, *, idle_s: float) -> None:
        self.kafka = kafka
        self.idle_s = idle_s
        self.redis = redis_url
        self.run = workloads.run_id()
        self.logs = Path(tempfile.mkdtemp(prefix=f"{self.run}-logs-"))

    def service(
        self, topic: str, instances: int, module: str = "consumer.cli"
    ) -> tuple[ServiceRun, RedisUse]:
        """tierstream run on ``topic``; its Redis use and its learning measured, then its
        keys deleted."""
        before = redis_memory.used_memory(self.redis)
        done = contenders.service(
            self.kafka,
            self.redis,
            topic,
            self.run,
            self.logs,
            instances=instances,
            idle_s=self.idle_s,
            module=module,
        )
        try:
            use = redis_memory.measure(self.redis, done.prefix, before) if done.records else None
            done = replace(done, learnt=redis_memory.learnt(self.redis, done.prefix))
        finally:
            redis_memory.delete_prefix(self.redis, done.prefix)
        return done, use or RedisUse(0, math.nan, math.nan)

    def empty_runs(self, n: int) -> dict[int, list[ServiceRun]]:
        """``n`` runs of 1 and of 2 instances on an empty topic: start-up and idle wait."""
        topic = workloads.unique(self.run, "empty")
        ensure_topics(self.kafka, [topic], partitions=workloads.PARTITIONS)
        out: dict[int, list[ServiceRun]] = {}
        for instances in (1, 2):
            out[instances] = [self.service(topic, instances)[0] for _ in range(n)]
            walls = ", ".join(f"{e.wall_s:.1f}" for e in out[instances])
            say(f"empty runs, {instances} instance(s): {walls} s")
        return out

    def throughput(self, w: Workload, empties: dict[int, list[ServiceRun]]) -> str:
        topic = workloads.unique(self.run, w.name.split()[0])
        say(f"{w.name}: producing {w.describe()} into {topic}")
        say(f"{w.name}: produced in {workloads.fill(self.kafka, topic, w):.1f} s")
        raw = contenders.raw_client(self.kafka, topic, self.logs)
        _progress(w, raw)
        # The Quix app and the service alternated, round by round: each service run is
        # judged against its own round's Quix run (the machine's pace drifts by minutes).
        quix_runs: list[Throughput] = []
        service_runs: dict[int, list[Throughput]] = {1: [], 2: []}
        use = None
        for k in range(w.runs):
            if w.runs > 1:
                say(f"{w.name}: round {k + 1} of {w.runs}")
            quix_runs.append(contenders.quix(self.kafka, topic, self.run, self.logs))
            _progress(w, quix_runs[-1])
            for instances, runs in service_runs.items():
                done, measured = self.service(topic, instances)
                use = use or measured  # the first round's 1-instance run
                runs.append(
                    contenders.tierstream(_service_name(instances), done, empties[instances])
                )
                _progress(w, runs[-1])
        floors = []
        for instances in (1, 2):
            done, _ = self.service(topic, instances, FLOOR)
            floors.append(
                contenders.tierstream(
                    _service_name(instances, FLOOR_NAME), done, empties[instances]
                )
            )
            _progress(w, floors[-1])
        workloads.delete_topics(self.kafka, topic)
        for r in [raw, *quix_runs, *(r for runs in service_runs.values() for r in runs), *floors]:
            if r.records != w.events:
                raise RuntimeError(f"{r.name} consumed {r.records} of {w.events} records")
        assert use is not None
        quix = median_rate(quix_runs)
        rows = [Ratio(raw, raw.rate / quix.rate), Ratio(quix, 1.0)]
        for runs in service_runs.values():
            ratios = [r.rate / q.rate for r, q in zip(runs, quix_runs, strict=True)]
            rows.append(median_ratio(runs, ratios))
        rows += [Ratio(r, r.rate / quix.rate) for r in floors]
        return _throughput_table(w, rows, use)

    def latency(
        self, rates: list[float], seconds: float, instances: list[int], runs: int = 1
    ) -> str:
        rows = []
        for n, rate in ((n, rate) for n in instances for rate in rates):
            measured = []
            for k in range(runs):
                say(
                    f"latency: {n} instance(s), {rate:,.0f} events/s for {seconds:.0f} s, "
                    f"every event a new user (run {k + 1} of {runs})"
                )
                m = latency.measure(
                    self.kafka,
                    self.redis,
                    self.run,
                    self.logs,
                    rate=rate,
                    seconds=seconds,
                    instances=n,
                )
                say(
                    f"latency: {n} instance(s), {rate:,.0f}/s offered, {m.achieved:,.0f}/s "
                    f"achieved: p50 {m.p50_ms:,.0f} ms, p99 {m.p99_ms:,.0f} ms "
                    f"({m.changes} of {m.events}; {m.parts()})"
                )
                measured.append(m)
            m = median_run(measured)
            rows.append(
                [
                    f"{n}",
                    f"{m.offered:,.0f}",
                    f"{m.achieved:,.0f}",
                    f"{m.events:,} ({seconds:.0f} s)",
                    f"{m.changes:,}",
                    f"**{m.p50_ms:,.0f}**",
                    f"**{m.p99_ms:,.0f}**",
                    ", ".join(f"{r.p99_ms:,.0f}" for r in measured),
                    f"{m.p99_to_broker_ms:,.0f} / {m.p99_after_broker_ms:,.0f}",
                    f"{m.cpu_generator:.2f} / {m.cpu_service:.2f} / {m.cpu_idle:.2f}",
                    f"{m.max_ms:,.0f}",
                    f"{max(r.max_rss_mb for r in measured):,.0f}",
                ]
            )
        header = [
            "instances",
            "offered events/s",
            "achieved",
            "events (a run)",
            "changes out",
            "p50 (ms)",
            "p99 (ms)",
            "p99 of each run (ms)",
            "p99 until the broker appended the event / from there (ms)",
            "CPU while producing (cores): generator / service / idle",
            "max (ms)",
            "max RSS (MB, largest instance)",
        ]
        note = (
            f"Each row is the median of {runs} runs by p99 (its p50 and max are that run's, "
            "its max RSS the largest of all); the runs' own p99s beside it, in the order they "
            "ran."
            if runs > 1
            else "One run per row."
        ) + (
            " The two parts of an event's latency, until the broker appended it and from "
            "there to its change's append, each have their own p99 (the input topic is "
            "stamped by the broker too: `tests/bench/latency.py`). The CPU column is that "
            "run's, while the measured stream was produced: the bench's own process (the "
            "load generator), the instances together, and what the machine's cores left "
            "idle, in cores."
        )
        return (
            "### Event-to-tier-change latency, `tierstream run`\n\n"
            + report.table(header, rows)
            + "\n\n"
            + note
        )

    def memory(self, users: list[int]) -> str:
        rows = []
        for n in users:
            w = workloads.memory_workload(n)
            topic = workloads.unique(self.run, f"memory{n}")
            say(f"memory: producing {w.describe()}")
            workloads.fill(self.kafka, topic, w)
            with redis_memory.room_for(self.redis, n):
                done, use = self.service(topic, 1)
            workloads.delete_topics(self.kafka, topic)
            say(
                f"memory: {n:,} users: max RSS {done.max_rss_mb[0]:,.0f} MB, Redis "
                f"{use.sampled_bytes:,.0f} B/user key, {use.delta_bytes:,.0f} B/user in all "
                f"({done.wall_s:.0f} s)"
            )
            rows.append(
                [
                    f"{n:,}",
                    f"{w.events:,}",
                    f"{use.users:,}",
                    f"{done.wall_s:,.0f}",
                    f"**{done.max_rss_mb[0]:,.0f}**",
                    f"**{use.sampled_bytes:,.0f}**",
                    f"{use.delta_bytes:,.0f}",
                ]
            )
        header = [
            "users",
            "events (30 days)",
            "user keys in Redis",
            "run wall (s)",
            "max RSS (MB)",
            "Redis MEMORY USAGE per user key (B)",
            "Redis used_memory growth per user (B)",
        ]
        return "### Memory, `tierstream run` (1 instance)\n\n" + report.table(header, rows)


#: What a rate cell says when the run's time is not above its empty runs' (``--quick``).
TOO_SHORT = "too short to time"


def _progress(w: Workload, r: Throughput) -> None:
    say(
        f"{w.name}: {r.name}: {r.records:,} records in {r.seconds:.1f} s = {r.rate:,.0f}/s "
        f"(wall {r.wall_s:.1f} s, max RSS {', '.join(f'{m:,.0f}' for m in r.max_rss_mb)} MB)"
    )


def _times(ratio: float) -> str:
    return f"{ratio:.2f}x" if math.isfinite(ratio) else "—"


def _learnt(r: Throughput) -> str:
    """What a service run learnt (the floor learns nothing; the others are no service)."""
    if not r.extra.get("samples"):
        return "—"
    return f"{r.extra['samples']:,.0f} / {r.extra['labels']:,.0f}"


def _throughput_table(w: Workload, rows: list[Ratio], use: RedisUse) -> str:
    header = [
        "contender",
        "events/s",
        "vs Quix Streams",
        "time (s)",
        "events per CPU-second",
        "wall with start-up (s)",
        "max RSS (MB)",
        "outputs",
        "learnt (samples / labels)",
        "vs Quix Streams, each round",
    ]
    body = [
        [
            r.name,
            f"**{r.rate:,.0f}**" if r.seconds > 0 else TOO_SHORT,
            _times(row.ratio) if r.seconds > 0 else "—",
            f"{r.seconds:.1f}",
            f"{r.rate_per_cpu:,.0f}" if r.cpu_s > 0 else TOO_SHORT,
            f"{r.wall_s:.1f}",
            " + ".join(f"{m:,.0f}" for m in r.max_rss_mb),
            f"{r.outputs:,}",
            _learnt(r),
            ", ".join(map(_times, row.each)) or "—",
        ]
        for row in rows
        for r in (row.run,)
    ]
    rounds = max(len(row.each) for row in rows)
    runs = [row.run for row in rows]
    short = any(r.seconds <= 0 or r.cpu_s <= 0 for r in runs)
    per_count = {  # each instance count's empty runs, once
        r.name.rsplit(", ", 1)[1]: r.extra for r in runs if "empty_run_s" in r.extra
    }
    empties = ", ".join(
        f"{e['empty_run_s']:.1f} s and {e['empty_run_cpu_s']:.1f} CPU-s ({count})"
        for count, e in per_count.items()
    )
    return (
        f"### {w.name.capitalize()}: {w.describe()}\n\n"
        + report.table(header, body)
        + (
            f"\n\nThe Quix app and `tierstream run` (1, then 2 instances) ran {rounds} rounds, "
            "alternated: the Quix row is its median run by events/s, each service row its run "
            "of median ratio to the same round's Quix run, with every round's ratio in the "
            "last column; the raw client and the floor ran once, against the median Quix run."
            if rounds > 1
            else ""
        )
        + f"\n\nEmpty runs subtracted from `tierstream run`: {empties}. Redis after the "
        f"1-instance run: {use.sampled_bytes:,.0f} bytes per user key (`MEMORY USAGE`, "
        f"{min(use.users, redis_memory.SAMPLE):,} keys), {use.delta_bytes:,.0f} bytes per "
        f"user in all (`used_memory` growth / {use.users:,} users)."
        + (
            f" *{TOO_SHORT}*: the run took no longer (or no more CPU) than the same "
            "instances on an empty topic, so what its records cost is within the start-up's "
            "and group join's spread (small workloads only, as with `--quick`)."
            if short
            else ""
        )
    )


if __name__ == "__main__":
    os.chdir(REPO)
    sys.exit(main())
