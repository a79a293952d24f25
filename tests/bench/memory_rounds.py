"""Where the live service's memory goes, round by round: one ``Service`` run in this
process on the memory workload (two events per user over 30 days, 4 partitions) against
the real Kafka + Redis of ``ops/stack.sh``, with a line after each load-apply round: its
records, the user states it loaded (the batch's users and the users of its due timers),
the timers it loaded and fired, its tier changes, and the process's resident set then
its anonymous part (the heap: the rest is library pages, whose share moves with what
the page cache holds) and its high-water mark (``/proc/self/status``: VmRSS, RssAnon,
VmHWM). ``--trace`` also takes a
``tracemalloc`` snapshot at the round with the highest resident set and prints what the
live Python objects then were, by line (slow: several times the run's time).

    python -m tests.bench.memory_rounds --users 100000
    TIERSTREAM_MAX_TIMERS_PER_BATCH=2000 python -m tests.bench.memory_rounds --users 100000

The topic is filled by a child process, so this process's memory is the service's own.
The service's settings come from the environment, as ``tierstream run``'s do.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Sequence
from typing import Any

from consumer.service.batch import BatchOutcome, Decoded
from consumer.service.loop import Service
from consumer.service.settings import Settings
from consumer.service.state_store import Loaded
from tests.bench import redis_memory, workloads
from tests.bench.contenders import service_env
from tests.integration.support import KAFKA, REDIS, REPO


def resident_mb() -> tuple[int, int, int]:
    """This process's resident set, its anonymous part and its high-water mark, in MB."""
    found = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "VmHWM"):
                found[key] = int(value.split()[0]) // 1024
    return found["VmRSS"], found["RssAnon"], found["VmHWM"]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--topic", help="a topic already filled (default: fill a new one)")
    ap.add_argument("--trace", action="store_true", help="tracemalloc at the peak round")
    args = ap.parse_args(argv)
    run = workloads.run_id()
    topic = args.topic or _filled(run, args.users)
    prefix = workloads.unique(run, "state")
    env = {**service_env(KAFKA, REDIS, topic, run, prefix), "TIERSTREAM_INSTANCE_ID": prefix}
    if args.trace:
        tracemalloc.start(1)
    rss, anon, hwm = resident_mb()
    print(f"start: resident {rss} MB ({anon} MB anonymous), high-water {hwm} MB", file=sys.stderr)
    service = Service(Settings.from_env(env))
    rows: list[list[int]] = []
    peak: list[Any] = [0, None]
    apply = service.checkpoint.step.apply

    def measured(decoded: Decoded, loaded: Loaded, *, emitted_at_ms: int | None) -> BatchOutcome:
        out = apply(decoded, loaded, emitted_at_ms=emitted_at_ms)
        rss, anon, hwm = resident_mb()
        rows.append(
            [
                len(rows),
                len(decoded.items),
                sum(len(s) for s in loaded.states.values()),
                sum(len(t) for t in loaded.timers.values()),
                out.timers_fired,
                len(out.changes),
                rss,
                anon,
                hwm,
            ]
        )
        if args.trace and rss > peak[0]:
            peak[:] = [rss, (len(rows) - 1, tracemalloc.take_snapshot())]
        return out

    service.checkpoint.step.apply = measured  # type: ignore[method-assign]
    t0 = time.monotonic()
    try:
        with redis_memory.room_for(REDIS, args.users):
            summary = service.run(stop_when_idle=3.0)
    finally:
        redis_memory.delete_prefix(REDIS, prefix)
        if not args.topic:
            workloads.delete_topics(KAFKA, topic)
    print("round records states timers fired changes rss_mb anon_mb hwm_mb")
    for row in rows:
        print(*row)
    print(
        f"{summary.records:,} records, {summary.tier_changes:,} changes, "
        f"{time.monotonic() - t0:.0f} s; max RSS "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MB"
    )
    if peak[1] is not None:
        round_no, snapshot = peak[1]
        stats = snapshot.statistics("lineno")
        print(f"live Python memory at round {round_no}: {sum(s.size for s in stats) / 1e6:.1f} MB")
        for s in stats[:25]:
            print(s)
    return 0


def _filled(run: str, users: int) -> str:
    """A new topic with the memory workload of ``users``, produced by a child process."""
    topic = workloads.unique(run, f"memory{users}")
    code = (
        "import sys; from tests.bench import workloads; "
        "workloads.fill(sys.argv[1], sys.argv[2], workloads.memory_workload(int(sys.argv[3])))"
    )
    subprocess.run(
        [sys.executable, "-c", code, KAFKA, topic, str(users)],
        check=True,
        cwd=REPO,
        env=dict(os.environ),
    )
    return topic


if __name__ == "__main__":
    raise SystemExit(main())
