"""What a user's stored state costs, in bytes and in CPU: the binary encoding
(:mod:`online_models.state_codec`) against the JSON the earlier version stored
(docs/performance.md, "User state in Redis").

For each workload of :data:`tests.bench.workloads.FULL` (and ``active``,
:data:`~tests.bench.workloads.ACTIVE_YEAR`, when asked): the stream is replayed in memory
(the service's batch step and commit protocol, 4 partitions), and each final state is
taken twice, as stored now and as the earlier version's JSON of the same state (the
dedup window as the event ids, taken from the stream). Both are written into Redis under
the service's key names, their ``MEMORY USAGE`` read and the keys deleted; then both are
encoded and decoded (min of 5 passes over up to 2,000 states). ``--live`` also runs
``tierstream run`` on the workload through Kafka and measures its user keys as
``make bench`` does (:mod:`tests.bench.redis_memory`); ``--live-only`` does that alone.

    python -m tests.bench.state_size [--workloads dense,sparse,active] [--live | --live-only]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import timeit
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import redis

from consumer.demo.synthetic import generate
from consumer.service.keys import KeySpace
from consumer.service.partitioning import partition_of
from consumer.service.records import InputRecord
from consumer.service.tier_config import DEFAULT_TIERS_FILE, load_engine
from consumer.tools.replay import replay
from online_models.state_codec import decode_state, encode_state
from online_models.user_state import DEDUP_WINDOW, Recomputable, UserState
from tests.bench import contenders, redis_memory, report, workloads
from tests.bench.processes import say
from tests.bench.workloads import Workload
from tests.integration.support import KAFKA, REDIS

#: States encoded and decoded by the CPU measurement.
CPU_SAMPLE = 2000


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--workloads", default="dense,sparse", help="which of dense, sparse, active (a year)"
    )
    ap.add_argument("--redis", default=REDIS, help="Redis URL (TIERSTREAM_TEST_REDIS)")
    ap.add_argument("--kafka", default=KAFKA, help="bootstrap (TIERSTREAM_TEST_KAFKA), --live")
    ap.add_argument("--live", action="store_true", help="also measure `tierstream run`")
    ap.add_argument("--live-only", action="store_true", help="measure `tierstream run` only")
    args = ap.parse_args(argv)
    wanted = set(args.workloads.split(","))
    rows = []
    for w in (*workloads.FULL, workloads.ACTIVE_YEAR):
        if w.name.split()[0] in wanted:
            if args.live_only:
                use = _live(w, args.kafka, args.redis)
                rows.append([w.name, *["not run"] * 4, _live_cell(use), "not run"])
            else:
                rows.append(measure(w, args.redis, args.kafka if args.live else None))
    print(table(rows))
    return 0


def measure(w: Workload, redis_url: str, kafka: str | None) -> list[str]:
    say(f"{w.name}: replaying {w.describe()} in memory")
    stored, before = _replayed(w)
    users = list(stored)
    now = [stored[u] for u in users]
    then = [before[u] for u in users]
    decoded = [decode_state(raw) for raw in now]
    say(f"{w.name}: {len(users):,} users; {holds(decoded)}")
    say(f"{w.name}: Redis MEMORY USAGE of each form")
    usage_now = _memory_usage(redis_url, users, now)
    usage_then = _memory_usage(redis_url, users, then)
    cpu = _cpu(decoded[:CPU_SAMPLE], then[:CPU_SAMPLE])
    live = "not run"
    if kafka is not None:
        live = _live_cell(_live(w, kafka, redis_url))
    return [
        f"{w.name}: {w.describe()}",
        f"{statistics.mean(map(len, then)):,.0f}",
        _spread(now),
        f"{usage_then:,.0f}",
        f"**{usage_now:,.0f}**",
        live,
        cpu,
    ]


def holds(states: Sequence[UserState]) -> str:
    """What the states hold on average: the parts that grow with a user's activity.

    >>> holds([UserState.new()])
    'per user: 0.00 pending snapshots (0.00 with a vector of their own), 0.00 digests'
    """
    pending = [p for s in states for p in s.pending or ()]
    own = sum(1 for p in pending if p[2] is not None and not isinstance(p[2], Recomputable))
    digests = sum(len(s.recent_ids) for s in states)
    n = max(1, len(states))
    return (
        f"per user: {len(pending) / n:.2f} pending snapshots ({own / n:.2f} with a vector "
        f"of their own), {digests / n:.2f} digests"
    )


def table(rows: list[list[str]]) -> str:
    header = [
        "workload",
        "JSON state (B, mean)",
        "binary state (B: mean, p50 / p99 / max)",
        "MEMORY USAGE, JSON (B/user)",
        "MEMORY USAGE, binary (B/user)",
        "`tierstream run`: MEMORY USAGE (B/user key)",
        "encode + decode per state (µs): JSON, binary",
    ]
    return report.table(header, rows)


def _records(w: Workload, ids: dict[str, deque[str]]) -> Iterator[InputRecord]:
    """The workload as the bench produces it (keyed by user, 4 partitions); the event
    ids of each user's dedup window are kept as the earlier version kept them."""
    offsets = [0] * workloads.PARTITIONS
    for r in generate(w.config()):
        user = (r.key or b"").decode()
        p = partition_of(user, workloads.PARTITIONS)
        window = ids.setdefault(user, deque(maxlen=DEDUP_WINDOW))
        event_id = orjson.loads(r.value)["event_id"]
        if event_id not in window:
            window.append(event_id)
        yield InputRecord("in", p, offsets[p], None, r.key, r.value)
        offsets[p] += 1


def _replayed(w: Workload) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """Each user's stored state, and the earlier version's JSON of the same state."""
    ids: dict[str, deque[str]] = {}
    _, store = replay(_records(w, ids), load_engine(DEFAULT_TIERS_FILE))
    before = {}
    for user, raw in store.users.items():
        data = decode_state(raw).to_json()
        kept = len(data.pop("recent_digests"))
        window = list(ids[user])[len(ids[user]) - kept :]
        before[user] = orjson.dumps({**data, "recent_ids": window})
    return dict(store.users), before


def _memory_usage(url: str, users: list[str], values: list[bytes]) -> float:
    """Mean ``MEMORY USAGE`` of the values stored under the service's key names."""
    keys = KeySpace(workloads.unique(workloads.run_id(), "state"))
    names = [keys.user("bench", partition_of(u, workloads.PARTITIONS), u) for u in users]
    client = redis.Redis.from_url(url)
    try:
        for i in range(0, len(names), 5000):
            client.mset(dict(zip(names[i : i + 5000], values[i : i + 5000], strict=True)))
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.memory_usage(name, samples=0)
        sizes = [int(s or 0) for s in pipe.execute()]
        for i in range(0, len(names), 5000):
            client.delete(*names[i : i + 5000])
    finally:
        client.close()
    return statistics.mean(sizes)


def _cpu(states: list[UserState], json_states: list[bytes]) -> str:
    """Encode + decode per state, microseconds: the earlier version's JSON path
    (``orjson.dumps(state.to_json())``, ``UserState.from_json(orjson.loads(raw))``) and
    the binary one, min of 5 passes each."""
    binary = [encode_state(s) for s in states]
    olds = [UserState.from_json(orjson.loads(raw)) for raw in json_states]

    def per_state(f: Callable[[], Any]) -> float:
        return min(timeit.repeat(f, number=1, repeat=5)) / len(states) * 1e6

    json_enc = per_state(lambda: [orjson.dumps(s.to_json()) for s in olds])
    json_dec = per_state(lambda: [UserState.from_json(orjson.loads(r)) for r in json_states])
    bin_enc = per_state(lambda: [encode_state(s) for s in states])
    bin_dec = per_state(lambda: [decode_state(r) for r in binary])
    return (
        f"{json_enc:.0f} + {json_dec:.0f} = {json_enc + json_dec:.0f}; "
        f"{bin_enc:.0f} + {bin_dec:.0f} = {bin_enc + bin_dec:.0f}"
    )


def _live(w: Workload, kafka: str, redis_url: str) -> redis_memory.RedisUse:
    run = workloads.run_id()
    topic = workloads.unique(run, w.name.split()[0])
    say(f"{w.name}: producing into {topic} for `tierstream run`")
    workloads.fill(kafka, topic, w)
    logs = Path(tempfile.mkdtemp(prefix=f"{run}-logs-"))
    before = redis_memory.used_memory(redis_url)
    try:
        done = contenders.service(kafka, redis_url, topic, run, logs, instances=1)
        try:
            use = redis_memory.measure(redis_url, done.prefix, before)
        finally:
            redis_memory.delete_prefix(redis_url, done.prefix)
    finally:
        workloads.delete_topics(kafka, run)
    say(f"{w.name}: `tierstream run` in {done.wall_s:.0f} s, {use.sampled_bytes:,.0f} B/user key")
    return use


def _live_cell(use: redis_memory.RedisUse) -> str:
    return f"{use.sampled_bytes:,.0f} ({use.delta_bytes:,.0f} in all, {use.users:,} users)"


def _spread(values: list[bytes]) -> str:
    sizes = sorted(map(len, values))
    p99 = sizes[min(len(sizes) - 1, int(0.99 * len(sizes)))]
    return f"{statistics.mean(sizes):,.0f}: {sizes[len(sizes) // 2]:,} / {p99:,} / {sizes[-1]:,}"


if __name__ == "__main__":
    sys.exit(main())
