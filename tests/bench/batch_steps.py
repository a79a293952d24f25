"""Where a batch's wall time goes, step by step, at a steady rate of new users.

Runs the latency measurement (:mod:`tests.bench.latency`) with each instance of the
service timing the commit protocol's steps (:mod:`consumer.service.checkpoint`: load,
apply, save the partitions, save the learning, check, publish, commit, clear) through the
checkpoint's step hook, and prints the mean milliseconds of each per batch beside the
latency::

    python -m tests.bench.batch_steps --rate 1000 --seconds 20
    python -m tests.bench.batch_steps --rate 1000 --env TIERSTREAM_COMMIT_INTERVAL_MS=0
    python -m tests.bench.batch_steps --plain --rate 5000 --seconds 30 --instances 2

``python -m tests.bench.batch_steps run`` is the instrumented service itself (what the
measurement starts): ``tierstream run`` with the step times written to stderr at exit.
The hook's own cost (a clock read per step) is in the figures; they are for comparing
settings, not for quoting as the service's speed; ``--plain`` runs ``tierstream run``
itself (the latency line only, as ``make bench`` measures it). Each instance also names its polls
that took long to bring records and those whose oldest record the broker had appended
over 100 ms before (the input topic is stamped by the broker): a batch late because its
records came late, not because it ran long; and the fetches the broker held over 100 ms
that asked for none of the input's partitions (those it held records of were left out,
and waited behind it: ``kafka_io.FETCH_WAIT_MS``).
"""

from __future__ import annotations

import argparse
import atexit
import os
import re
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.bench import latency, workloads
from tests.integration.support import KAFKA, REDIS

#: The steps of a batch, in order (``save`` is the learning's, 3b).
BATCH_STEPS = ("load", "apply", "save-partitions", "save", "check", "publish", "commit", "clear")
#: Gaps between batches worth reporting (seconds).
WIDE_GAP_S = 0.05
#: Records a poll brings this long after the broker appended them are worth reporting (ms).
STALE_MS = 100
#: The line each instrumented instance writes at exit.
STEPS_LINE = re.compile(r"^batch steps over (\d+) batches: (.*)$", re.M)


def _instrumented_service(argv: Sequence[str]) -> int:
    """``tierstream run`` with every checkpoint's steps timed (wall clock)."""
    from consumer.cli import main as cli_main
    from consumer.service import checkpoint

    totals: defaultdict[str, float] = defaultdict(float)
    counts: Counter[str] = Counter()
    per_batch: list[dict[str, float]] = []  # each batch's steps, for the slowest ones
    #: Between batches (the send of the outputs, the poll): seconds, and when it ended
    #: (the wall clock, as the events' timestamps).
    gaps: list[tuple[float, float]] = []
    ended: list[float] = []
    init = checkpoint.Checkpoint.__init__

    def timed_init(self: checkpoint.Checkpoint, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        hook, run, last, inside = self.on_step, self._run, [0.0], [False]

        def start(*a: Any, **k: Any) -> checkpoint.CheckpointStats:
            last[0] = time.perf_counter()
            if ended:  # the time since the last batch: its send, the poll, idle waits
                gaps.append((last[0] - ended[0], time.time()))
            inside[0] = True
            try:
                return run(*a, **k)
            finally:
                inside[0] = False
                ended[:] = [time.perf_counter()]

        def step(name: str) -> None:
            now = time.perf_counter()
            # Not acquire, republish, nor the steps of a batch settled while idle
            # (between batches: the time since the last step is the idle wait).
            if name in BATCH_STEPS and inside[0]:
                totals[name] += now - last[0]
                counts[name] += 1
                if name == "load":
                    per_batch.append({})
                if per_batch:
                    per_batch[-1][name] = now - last[0]
            last[0] = now
            hook(name)

        self._run = start  # type: ignore[method-assign]
        self.on_step = step

    def report() -> None:
        batches = max(1, counts["load"])
        parts = ", ".join(f"{k} {1000 * v / batches:.2f}" for k, v in totals.items())
        print(f"batch steps over {batches} batches: {parts}", file=sys.stderr, flush=True)
        walls = sorted(per_batch, key=lambda b: sum(b.values()))
        if walls:
            p99 = 1000 * sum(walls[min(len(walls) - 1, int(0.99 * len(walls)))].values())
            print(f"batch wall p99 {p99:.1f} ms; the slowest:", file=sys.stderr)
            for b in walls[-5:]:
                steps = ", ".join(f"{k} {1000 * v:.1f}" for k, v in b.items())
                print(f"  {1000 * sum(b.values()):.1f} ms: {steps}", file=sys.stderr)
        wide = [(at, g) for g, at in gaps if g > WIDE_GAP_S]
        if wide:
            shown = ", ".join(f"{1000 * g:.0f} ms to {at:.1f}" for at, g in wide[-8:])
            over = f"over {WIDE_GAP_S * 1000:.0f} ms"
            print(f"between batches (send, poll, idle) {over}: {shown}", file=sys.stderr)

    _time_polls()
    _time_fetches()
    checkpoint.Checkpoint.__init__ = timed_init  # type: ignore[method-assign]
    atexit.register(report)
    return cli_main(list(argv))


def _time_polls() -> None:
    """Time the service's polls; at exit, name those that brought records after more
    than :data:`WIDE_GAP_S` (a wait on the broker, or the process short of CPU)."""
    from consumer.service import kafka_io

    polls: list[tuple[float, float, int]] = []  # seconds, when it ended, records
    #: Polls whose oldest record the broker had appended over STALE_MS before: when it
    #: ended, that age (ms), records (the input topic is stamped LogAppendTime by
    #: tests/bench/latency.py, so a record's timestamp is its append time).
    stale: list[tuple[float, float, int]] = []
    poll = kafka_io.EventSource.poll

    def timed_poll(self: kafka_io.EventSource, timeout_ms: int, *args: Any, **kw: Any) -> list[Any]:
        began = time.perf_counter()
        got = poll(self, timeout_ms, *args, **kw)
        now = time.time()
        polls.append((time.perf_counter() - began, now, len(got)))
        stamps = [r.timestamp_ms for r in got if r.timestamp_ms is not None]
        age = now * 1000 - min(stamps) if stamps else 0.0
        if age > STALE_MS:
            stale.append((now, age, len(got)))
        return got

    def report() -> None:
        wide = [(at, s, n) for s, at, n in polls if n and s > WIDE_GAP_S]
        shown = ", ".join(f"{1000 * s:.0f} ms to {at:.1f} ({n} records)" for at, s, n in wide[-8:])
        print(
            f"polls that brought records after over {WIDE_GAP_S * 1000:.0f} ms: {shown or 'none'}",
            file=sys.stderr,
        )
        late = [(at, age, n) for at, age, n in stale if age > 3 * STALE_MS]
        old = ", ".join(f"{age:.0f} ms old to {at:.1f} ({n} records)" for at, age, n in late)
        print(
            f"polls whose oldest record was appended over {STALE_MS} ms before: {len(stale)}; "
            f"over {3 * STALE_MS} ms: {old or 'none'}",
            file=sys.stderr,
        )

    kafka_io.EventSource.poll = timed_poll  # type: ignore[method-assign]
    atexit.register(report)


def _time_fetches() -> None:
    """Note the fetches the broker held over :data:`STALE_MS` (when the answer came, how
    long, the partitions asked for); at exit, name those that asked for none of the
    input topic's partitions: the forget requests' alone, held because none come, while
    the input's were left out because the consumer held records of theirs, and their
    next records waited behind it (kafka-python sends one fetch at a time to a broker).
    An idle instance's fetches of its input partitions, held because nothing comes, are
    not named."""
    from kafka.consumer.fetcher import Fetcher

    input_topic = os.environ.get("TIERSTREAM_INPUT_TOPIC", "user-events")
    held: list[tuple[float, float, tuple[str, ...]]] = []  # answered, seconds held, asked
    handle = Fetcher._handle_fetch_response

    def timed(self: Any, node_id: Any, offsets: Any, sent: float, response: Any) -> Any:
        took = time.monotonic() - sent
        if took * 1000 > STALE_MS and all(tp.topic != input_topic for tp in offsets):
            asked = tuple(sorted(f"{tp.topic[-6:]}:{tp.partition}" for tp in offsets))
            held.append((time.time(), took, asked))
        return handle(self, node_id, offsets, sent, response)

    def report() -> None:
        shown = ", ".join(
            f"{1000 * s:.0f} ms to {at:.1f} [{','.join(asked)}]" for at, s, asked in held[:12]
        )
        print(
            f"fetches held over {STALE_MS} ms asking for no input partition ({len(held)}): "
            f"{shown or 'none'}",
            file=sys.stderr,
        )

    Fetcher._handle_fetch_response = timed  # type: ignore[method-assign]
    atexit.register(report)


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in[:1] == ["run"]:
        return _instrumented_service(args_in)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=1000.0, help="new users a second")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--instances", type=int, default=1)
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for the service")
    ap.add_argument(
        "--plain",
        action="store_true",
        help="the service as shipped (tierstream run), without the step timings",
    )
    args = ap.parse_args(args_in)
    extra = dict(e.split("=", 1) for e in args.env)
    logs = Path(tempfile.mkdtemp(prefix="batch-steps-"))
    m = latency.measure(
        KAFKA,
        REDIS,
        workloads.run_id(),
        logs,
        rate=args.rate,
        seconds=args.seconds,
        instances=args.instances,
        extra_env=extra,
        module="consumer.cli" if args.plain else "tests.bench.batch_steps",
    )
    print(
        f"{args.instances} instance(s), {args.rate:,.0f} new users/s {extra or ''}: "
        f"p50 {m.p50_ms:,.0f} ms, p99 {m.p99_ms:,.0f} ms, max {m.max_ms:,.0f} ms; {m.parts()}"
    )
    worst = ", ".join(
        f"{ms} ms created at {at:.1f} ({before} ms to the broker)" for at, ms, before in m.worst
    )
    print(f"  the slowest events: {worst}")
    for err in sorted(logs.glob("*.err")):
        text = err.read_text(errors="replace")
        for found in STEPS_LINE.finditer(text):
            print(f"  ms per batch over {found.group(1)} batches: {found.group(2)}")
        slowest = text.find("batch wall p99")
        if slowest >= 0:
            print("  " + text[slowest:].strip().replace("\n", "\n  "))
    return 0


if __name__ == "__main__":
    sys.exit(main())
