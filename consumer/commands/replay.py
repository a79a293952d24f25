"""``tierstream replay FILE``: a file of input events (JSONL, gzip, CSV) through the
live service's batch step and commit protocol, without Kafka; tier changes, dead
letters and a snapshot to files (:mod:`consumer.tools.replay`)."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from consumer.commands.common import add_command, redis_store, settings_from
from consumer.service.errors import StateStoreError, UserError
from consumer.service.gc_settings import settle_collector
from consumer.service.records import OutputRecord
from consumer.service.redis_connection import parse_redis_url
from consumer.service.settings import Settings, mask_url
from consumer.tools.progress import Progress

if TYPE_CHECKING:
    from consumer.service.checkpoint import CheckpointStats
    from consumer.service.records import InputRecord
    from consumer.service.state_store import StateStore
    from consumer.tools.replay import Replay, ReplaySummary


def register(sub: Any) -> None:
    """Add ``replay`` to the sub-commands."""
    p = add_command(
        sub,
        "replay",
        help="run an event file through the service's code path, without Kafka",
        description="Replays FILE through the live service's batch step and commit "
        "protocol. Tier changes are what the service would publish, with emitted_at set "
        "to the event time of the change, so two replays give identical bytes.",
    )
    p.add_argument("file", metavar="FILE", help="JSONL of input events (gzip too); '-': stdin")
    p.add_argument(
        "--csv-map",
        metavar="FIELD=COLUMN,...",
        help="read FILE as CSV: which column gives which event field "
        "(user_id and timestamp required; amount, event_id, event_type, currency, session_id)",
    )
    p.add_argument(
        "--event-type",
        metavar="TYPE",
        help="event type of every CSV row when no column gives it (default: purchase)",
    )
    p.add_argument(
        "--source-name",
        metavar="NAME",
        help="the topic name the file stands for (default: its file name); offsets are "
        "remembered per name in a Redis state",
    )
    p.add_argument(
        "--until",
        metavar="TIME",
        help="only events at or before TIME (RFC 3339, epoch ms or YYYY-MM-DD UTC); "
        "event time then advances to TIME",
    )
    p.add_argument(
        "--tiers",
        metavar="FILE",
        help="tier config to replay with (default: TIERSTREAM_TIERS_FILE)",
    )
    p.add_argument("--batch-size", type=int, default=2000, help="records per batch")
    p.add_argument(
        "--state",
        default="memory",
        metavar="memory|redis|URL",
        help="where state lives: memory, redis (TIERSTREAM_REDIS_URL) or a redis:// URL",
    )
    p.add_argument("--key-prefix", help="Redis key prefix (default: TIERSTREAM_KEY_PREFIX)")
    p.add_argument("--changes-out", metavar="FILE", help="JSONL of the tier changes ('-': stdout)")
    p.add_argument("--dlq-out", metavar="FILE", help="JSONL of the dead letters ('-': stdout)")
    p.add_argument("--snapshot-out", metavar="FILE", help="JSONL, one line per user, by user id")
    p.add_argument(
        "--model",
        metavar="FILE",
        help="start from this model file (tierstream model fit/export), as `model import` "
        "would; learning goes on from it",
    )
    p.add_argument("--model-out", metavar="FILE", help="write the model at the end (JSON)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=replay)


def replay(args: argparse.Namespace) -> int:
    """Replay the file; write what the arguments ask for; print a summary."""
    from consumer.tools.replay import Replay
    from consumer.tools.sources import open_input, parse_instant

    settings = settings_from(args)
    until = parse_instant(args.until) if args.until else None
    if args.batch_size <= 0:
        raise UserError("--batch-size must be positive")
    url = _state_url(args.state, settings)
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(
            open_input(
                args.file,
                csv_map=args.csv_map,
                event_type=args.event_type,
                source_name=args.source_name,
            )
        )
        store = _state_store(url, settings)
        stack.callback(store.close)
        _one_partition(store, source.name)
        if args.model:
            from consumer.service.model_files import import_model

            import_model(store, Path(args.model))
        outputs = _OutputFiles(args, settings.output_topic, settings.dlq_topic)
        stack.callback(outputs.close)
        replayer = Replay.from_settings(
            settings,
            store,
            emit=outputs.emit,
            batch_size=args.batch_size,
            shared=url is not None,
            check_keys=False,  # a file has no record keys
        )
        if not args.quiet:
            replayer.on_batch = _BatchProgress(replayer, source.fraction_read)
        settle_collector()
        t0 = time.monotonic()
        try:
            summary = replayer.run(source.records, until_ms=until)
        except StateStoreError as exc:
            raise UserError(
                f"Redis failed during the replay ({exc}); run it again: what was saved is "
                "skipped, the rest is applied"
            ) from None
        elapsed = time.monotonic() - t0
        if isinstance(replayer.on_batch, _BatchProgress):
            replayer.on_batch.progress.clear()
        if args.snapshot_out:
            _write_snapshot(args.snapshot_out, replayer)
        if args.model_out:
            from consumer.service.model_files import export_model

            export_model(store, Path(args.model_out))
    _print_summary(summary, elapsed, source.name)
    return 0


def _state_store(url: str | None, settings: Settings) -> StateStore:
    """The replay's store: Redis at ``url``, else memory; either loads at most
    ``max_timers_per_batch`` timers per batch, as the service does (the slice bounds what
    one batch holds in memory; the decisions are the same whatever its size).

    >>> _state_store(None, Settings(max_timers_per_batch=500)).max_timers
    500
    """
    from consumer.service.state_store import MemoryStateStore

    if url:
        return redis_store(url, settings)
    return MemoryStateStore(max_timers=settings.max_timers_per_batch)


def _one_partition(store: StateStore, name: str) -> None:
    """A file is one partition of a topic named after it: record it so, so that the tools
    find its users (:mod:`consumer.service.partitioning`)."""
    recorded = store.record_partition_count(name, 1)
    if recorded != 1:
        raise UserError(
            f"the state already holds a topic {name!r} of {recorded} partitions; a file "
            "stands for one partition: replay it with another --source-name"
        )


def _state_url(state: str, settings: Settings) -> str | None:
    """None for memory, else the Redis URL ``--state`` names."""
    if state == "memory":
        return None
    if state == "redis":
        return settings.redis_url
    try:
        parse_redis_url(state)
    except ValueError as exc:
        raise UserError(
            f"--state {mask_url(state)!r}: expected memory, redis or a redis:// URL; {exc}"
        ) from None
    return state


class _OutputFiles:
    """The replay's --changes-out and --dlq-out, opened before anything runs."""

    def __init__(self, args: argparse.Namespace, output_topic: str, dlq_topic: str) -> None:
        self.output_topic = output_topic
        self.dlq_topic = dlq_topic
        self.changes = _open_out(args.changes_out)
        try:
            self.dlq = _open_out(args.dlq_out)
        except BaseException:
            self.close()
            raise

    def emit(self, rec: OutputRecord) -> None:
        fh = {self.output_topic: self.changes, self.dlq_topic: self.dlq}.get(rec.topic)
        if fh is not None and rec.value is not None:  # the current-tier topic: not written
            fh.write(rec.value)
            fh.write(b"\n")

    def close(self) -> None:
        for fh in (self.changes, getattr(self, "dlq", None)):
            if fh is not None and fh is not sys.stdout.buffer:
                fh.close()
            elif fh is not None:
                fh.flush()


def _open_out(path: str | None) -> IO[bytes] | None:
    if path is None:
        return None
    if path == "-":
        return sys.stdout.buffer
    try:
        return open(path, "wb")
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror}") from None


class _BatchProgress:
    """The replay's progress line: records, rate, share of the file read, tier changes."""

    def __init__(self, replayer: Replay, fraction: Callable[[], float | None]) -> None:
        self.replayer = replayer
        self.changes = 0
        self.progress = Progress(fraction=fraction, detail=lambda: f"{self.changes:,} tier changes")

    def __call__(self, stats: CheckpointStats, batch: Sequence[InputRecord]) -> None:
        self.changes += len(stats.outcome.changes)
        self.progress(self.replayer.summary.records + len(batch))


def _write_snapshot(path: str, replayer: Replay) -> None:
    from consumer.service.redis_store import RedisStateStore
    from consumer.service.state_store import MemoryStateStore
    from consumer.tools.snapshot import RedisStates, memory_states, snapshot_lines, write_lines

    states: Iterable[tuple[str, bytes]]
    store = replayer.store
    if isinstance(store, MemoryStateStore):
        states = memory_states(store)
    else:
        assert isinstance(store, RedisStateStore)
        states = RedisStates(store)
    write_lines(path, snapshot_lines(states, replayer.engine, replayer.now_ms()))


def _print_summary(summary: ReplaySummary, elapsed: float, name: str) -> None:
    r = summary.results
    rate = summary.records / max(elapsed, 1e-9)
    print(
        f"tierstream: replayed {summary.records:,} records of {name} in {elapsed:.1f} s "
        f"({rate:,.0f} records/s): {r.get('applied', 0):,} applied, "
        f"{r.get('duplicate', 0):,} duplicates, {r.get('dlq', 0):,} dead letters; "
        f"{summary.tier_changes:,} tier changes, {summary.timers_fired:,} timers fired",
        file=sys.stderr,
    )
    if summary.after_until:
        print(
            f"tierstream: {summary.after_until:,} events later than --until were left out",
            file=sys.stderr,
        )
    if r.get("skipped"):
        print(
            f"tierstream: {r['skipped']:,} records were skipped: this state had applied them "
            f"already (same source name {name!r} and key prefix); replay them with another "
            "--key-prefix or --source-name",
            file=sys.stderr,
        )
