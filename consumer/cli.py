"""The ``tierstream`` command.

``run`` (the service), ``generate`` (a synthetic stream), ``replay`` (a file through the
service's code path, no Kafka), ``snapshot`` (everyone's tier from Redis), ``inspect``
(one user's tier and why), ``config`` (the settings in force), ``model`` (export or import
the global model) and ``demo`` (all of it in one process, no server).

Errors a user can cause (a bad setting, an unreachable server, a missing file) print one
line starting with ``tierstream: error:`` and exit with status 2; anything else is a bug
and shows its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson

from consumer.config_view import effective_settings, mask_url, resolve_environ
from consumer.errors import StateStoreError, StateStoreUnavailable, UserError
from consumer.progress import Progress
from consumer.records import OutputRecord
from consumer.settings import Settings
from consumer.snapshot import write_lines

if TYPE_CHECKING:
    from collections.abc import Callable

    from consumer.checkpoint import CheckpointStats
    from consumer.records import InputRecord
    from consumer.replay import Replay, ReplaySummary
    from consumer.state_store import RedisStateStore, StateStore
    from online_models.engine import TierEngine

log = logging.getLogger("tierstream")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tierstream`` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("kafka").setLevel(logging.WARNING)
    try:
        args.environ, args.file_keys = resolve_environ(args.config)
        code: int = args.func(args)
    except UserError as exc:
        print(f"tierstream: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tierstream",
        description="Online customer segmentation: user events in, tier changes out.",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="TOML settings file (or TIERSTREAM_CONFIG); environment variables win over it",
    )
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="consume the input topic and publish tier changes (settings: TIERSTREAM_* env)",
    )
    run.add_argument(
        "--stop-when-idle",
        type=float,
        metavar="SECONDS",
        help="stop cleanly once no record arrived for SECONDS (catch-up runs, tests)",
    )
    run.add_argument(
        "--freeze-model",
        action="store_true",
        help="score with the stored model version and learn nothing (TIERSTREAM_FREEZE_MODEL)",
    )
    run.add_argument(
        "--model-file",
        metavar="FILE",
        help="score with this exported model, frozen (TIERSTREAM_MODEL_FILE)",
    )
    run.set_defaults(func=_run)

    gen = sub.add_parser("generate", help="write a realistic synthetic event stream")
    gen.add_argument("--users", type=int, default=1000)
    gen.add_argument("--events", type=int, default=50_000)
    gen.add_argument("--seed", type=int, default=42)
    gen.add_argument("--days", type=int, default=180, help="event-time horizon in days")
    gen.add_argument(
        "--bad-fraction", type=float, default=0.0, help="share of malformed records (0..1)"
    )
    where = gen.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", type=Path, help="JSONL file to write ('-' for stdout)")
    where.add_argument("--topic", help="Kafka topic to produce to (TIERSTREAM_KAFKA_BOOTSTRAP)")
    gen.add_argument(
        "--partitions", type=int, default=1, help="partitions when --topic does not exist yet"
    )
    gen.add_argument("--truth-out", type=Path, help="JSONL of each user's latent type")
    gen.set_defaults(func=_generate)
    _add_replay(sub)
    _add_snapshot(sub)
    _add_inspect(sub)
    _add_config(sub)
    _add_model(sub)
    _add_demo(sub)
    return parser


def _add_source_args(p: argparse.ArgumentParser) -> None:
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


def _add_replay(sub: Any) -> None:
    p = sub.add_parser(
        "replay",
        help="run an event file through the service's code path, without Kafka",
        description="Replays FILE through the live service's batch step and commit "
        "protocol. Tier changes are what the service would publish, with emitted_at set "
        "to the event time of the change, so two replays give identical bytes.",
    )
    _add_source_args(p)
    p.add_argument(
        "--state",
        default="memory",
        metavar="memory|redis|URL",
        help="where state lives: memory (default), redis (TIERSTREAM_REDIS_URL) or a redis:// URL",
    )
    p.add_argument("--key-prefix", help="Redis key prefix (default: TIERSTREAM_KEY_PREFIX)")
    p.add_argument("--changes-out", metavar="FILE", help="JSONL of the tier changes")
    p.add_argument("--dlq-out", metavar="FILE", help="JSONL of the dead letters")
    p.add_argument("--snapshot-out", metavar="FILE", help="JSONL, one line per user, by user id")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=_replay)


def _add_snapshot(sub: Any) -> None:
    p = sub.add_parser(
        "snapshot",
        help="write every user's tier and scores from Redis (one JSON line per user)",
        description="Reads the user states of a deployment (TIERSTREAM_REDIS_URL, "
        "TIERSTREAM_KEY_PREFIX) with SCAN and MGET, a thousand at a time.",
    )
    p.add_argument("--out", required=True, metavar="FILE", help="JSONL to write ('-': stdout)")
    p.add_argument(
        "--as-of",
        metavar="TIME",
        help="score everyone as of this event time (default: each user's last event)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=_snapshot)


def _add_inspect(sub: Any) -> None:
    p = sub.add_parser(
        "inspect",
        help="show one user's tier and why (from Redis, or from a replay of a file)",
    )
    p.add_argument("user_id", metavar="USER_ID")
    p.add_argument(
        "--replay",
        metavar="FILE",
        help="replay FILE in memory and look there instead of in Redis",
    )
    p.add_argument("--csv-map", metavar="FIELD=COLUMN,...", help="with --replay: read CSV")
    p.add_argument("--event-type", metavar="TYPE", help="with --replay and --csv-map")
    p.add_argument("--until", metavar="TIME", help="with --replay: only events up to TIME")
    p.add_argument("--as-of", metavar="TIME", help="score as of this event time")
    p.add_argument("--json", action="store_true", help="the full explanation as JSON")
    p.set_defaults(func=_inspect)


def _add_config(sub: Any) -> None:
    p = sub.add_parser("config", help="show the settings in force, secrets masked")
    p.add_argument("--show", action="store_true", help="print the settings (the default)")
    p.add_argument("--json", action="store_true", help="as JSON")
    p.set_defaults(func=_config)


def _add_model(sub: Any) -> None:
    p = sub.add_parser(
        "model",
        help="export the group's global model to a JSON file, or import one (Redis)",
        description="export FILE writes the stored global model (TIERSTREAM_REDIS_URL, "
        "TIERSTREAM_KEY_PREFIX); import FILE checks a model file and makes it the current "
        "version. Score with a file instead: TIERSTREAM_MODEL_FILE=FILE.",
    )
    p.add_argument("action", choices=["export", "import"])
    p.add_argument("file", metavar="FILE", type=Path)
    p.set_defaults(func=_model)


#: ``tierstream demo``'s defaults, those of :class:`consumer.demo.DemoConfig` (not imported
#: here: it loads the whole core, and the parser is built for every command).
DEMO_DEFAULTS: dict[str, Any] = {
    "users": 5_000,
    "events": 200_000,
    "seed": 42,
    "days": 180,
    "out_dir": Path("out"),
}


def _add_demo(sub: Any) -> None:
    d = DEMO_DEFAULTS
    p = sub.add_parser(
        "demo",
        help="generate a stream and run the whole pipeline in this process, no server",
    )
    p.add_argument("--users", type=int, default=d["users"])
    p.add_argument("--events", type=int, default=d["events"])
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument("--days", type=int, default=d["days"], help="event-time horizon in days")
    p.add_argument("--out-dir", type=Path, default=d["out_dir"], help="where the report goes")
    p.set_defaults(func=_demo)


def _run(args: argparse.Namespace) -> int:
    from consumer.loop import Service

    settings = Settings.from_env(args.environ)
    if args.freeze_model or args.model_file:
        settings = dataclasses.replace(
            settings,
            freeze_model=settings.freeze_model or args.freeze_model,
            model_file=args.model_file or settings.model_file,
        )
        settings.check()
    service = Service(settings)
    service.install_signal_handlers()
    log.info(
        "consuming %s as group %s; tier changes -> %s, DLQ -> %s",
        settings.input_topic,
        settings.group_id,
        settings.output_topic,
        settings.dlq_topic,
    )
    t0 = time.monotonic()
    summary = service.run(stop_when_idle=args.stop_when_idle)
    elapsed = time.monotonic() - t0
    results = ", ".join(f"{k} {v}" for k, v in sorted(summary.results.items())) or "none"
    print(
        f"tierstream: {summary.records} records in {summary.batches} batches "
        f"({results}); {summary.tier_changes} tier changes; {elapsed:.1f} s",
        file=sys.stderr,
    )
    return 0


def _generate(args: argparse.Namespace) -> int:
    from consumer import synthetic

    if args.users <= 0 or args.events <= 0:
        raise UserError("--users and --events must be positive")
    if not 0.0 <= args.bad_fraction <= 1.0:
        raise UserError("--bad-fraction must be between 0 and 1")
    config = synthetic.GeneratorConfig(
        users=args.users,
        events=args.events,
        seed=args.seed,
        days=args.days,
        bad_fraction=args.bad_fraction,
    )
    records = synthetic.generate(config)
    if args.topic:
        from consumer.kafka_io import produce_records

        settings = Settings.from_env(args.environ)
        n = produce_records(
            settings.kafka_bootstrap,
            args.topic,
            ((r.key, r.value) for r in records),
            partitions=args.partitions,
            progress=_progress(args.events),
        )
    else:
        progress = _progress(args.events)
        n = write_lines(args.out, (r.value for r in records), progress)
        progress.finish(n)
    print(f"tierstream: generated {n} records", file=sys.stderr)
    if args.truth_out:
        write_lines(args.truth_out, (orjson.dumps(t) for t in synthetic.truth(config)))
    return 0


def _progress(total: int) -> Progress:
    return Progress(total)


# --------------------------------------------------------------------------- replay


class _OutputFiles:
    """The replay's --changes-out and --dlq-out, opened before anything runs."""

    def __init__(self, args: argparse.Namespace, output_topic: str) -> None:
        self.output_topic = output_topic
        self.changes = _open_out(args.changes_out)
        try:
            self.dlq = _open_out(args.dlq_out)
        except BaseException:
            self.close()
            raise

    def emit(self, rec: OutputRecord) -> None:
        fh = self.changes if rec.topic == self.output_topic else self.dlq
        if fh is not None:
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


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env(args.environ)
    tiers = getattr(args, "tiers", None)
    if tiers:
        if not Path(tiers).is_file():
            raise UserError(f"--tiers {tiers}: no such file")
        settings = dataclasses.replace(settings, tiers_file=tiers)
    prefix = getattr(args, "key_prefix", None)
    if prefix is not None:
        if not prefix:
            raise UserError("--key-prefix must not be empty")
        settings = dataclasses.replace(settings, key_prefix=prefix)
    return settings


def _redis_store(url: str, settings: Settings) -> RedisStateStore:
    from consumer.state_store import RedisStateStore

    store = RedisStateStore(
        url, prefix=settings.key_prefix, ttl_seconds=round(settings.state_ttl_days * 86400)
    )
    try:
        store.ping()
    except StateStoreUnavailable as exc:
        message = str(exc).replace(url, mask_url(url))
        if url != settings.redis_url:  # given with --state
            message = message.replace("or set TIERSTREAM_REDIS_URL", "or check --state")
        raise StateStoreUnavailable(message) from None
    return store


def _state_url(state: str, settings: Settings) -> str | None:
    """None for memory, else the Redis URL ``--state`` names."""
    if state == "memory":
        return None
    if state == "redis":
        return settings.redis_url
    if state.split("://", 1)[0] in ("redis", "rediss", "unix"):
        return state
    raise UserError(f"--state {mask_url(state)!r}: expected memory, redis or a redis:// URL")


def _replay(args: argparse.Namespace) -> int:
    from consumer.sources import open_input, parse_instant
    from consumer.state_store import MemoryStateStore

    settings = _settings(args)
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
        store: StateStore = _redis_store(url, settings) if url else MemoryStateStore()
        stack.callback(store.close)
        outputs = _OutputFiles(args, settings.output_topic)
        stack.callback(outputs.close)
        replayer = _replayer(settings, store, outputs.emit, args.batch_size, url is not None)
        if not args.quiet:
            _show_progress(replayer, source.fraction_read)
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
            _write_replay_snapshot(args.snapshot_out, replayer, url, settings, stack)
    _print_replay_summary(summary, elapsed, source.name)
    return 0


class _BatchProgress:
    """The replay's progress line: records, rate, share of the file read, tier changes."""

    def __init__(self, replayer: Replay, fraction: Callable[[], float | None]) -> None:
        self.replayer = replayer
        self.changes = 0
        self.progress = Progress(fraction=fraction, detail=lambda: f"{self.changes:,} tier changes")

    def __call__(self, stats: CheckpointStats, batch: Sequence[InputRecord]) -> None:
        self.changes += len(stats.outcome.changes)
        self.progress(self.replayer.summary.records + len(batch))


def _show_progress(replayer: Replay, fraction: Callable[[], float | None]) -> None:
    replayer.on_batch = _BatchProgress(replayer, fraction)


def _write_replay_snapshot(
    path: str, replayer: Replay, url: str | None, settings: Settings, stack: contextlib.ExitStack
) -> None:
    from consumer.snapshot import RedisStates, memory_states, snapshot_lines
    from consumer.state_store import MemoryStateStore

    states: Iterable[tuple[str, bytes]]
    if isinstance(replayer.store, MemoryStateStore):
        states = memory_states(replayer.store)
    else:
        redis_states = RedisStates(url or settings.redis_url, settings.key_prefix)
        stack.callback(redis_states.close)
        states = redis_states
    write_lines(path, snapshot_lines(states, replayer.engine, _replay_now(replayer)))


def _replay_now(replayer: Replay) -> int | None:
    """Event-time "now" of a replay: ``--until`` if given, else the newest watermark, so
    scores are as of the end of the stream, as the live service would report them."""
    if replayer.watermark_ms is not None:
        return replayer.watermark_ms
    return replayer.store.watermark()


def _replayer(
    settings: Settings,
    store: StateStore,
    emit: Callable[[OutputRecord], None],
    batch_size: int,
    shared: bool,
) -> Replay:
    from consumer.loop import build_engine
    from consumer.replay import Replay

    return Replay(
        build_engine(settings, store),
        store,
        emit=emit,
        batch_size=batch_size,
        output_topic=settings.output_topic,
        dlq_topic=settings.dlq_topic,
        max_record_bytes=settings.max_record_bytes,
        dlq_max_copy_bytes=settings.dlq_max_copy_bytes,
        instance_id=settings.instance if shared else "local",
    )


def _print_replay_summary(summary: ReplaySummary, elapsed: float, name: str) -> None:
    r = summary.results
    rate = summary.records / max(elapsed, 1e-9)
    print(
        f"tierstream: replayed {summary.records:,} records of {name} in {elapsed:.1f} s "
        f"({rate:,.0f} records/s): {r.get('applied', 0):,} applied, "
        f"{r.get('duplicate', 0):,} duplicates, {r.get('dlq', 0):,} dead letters; "
        f"{summary.tier_changes:,} tier changes",
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


# --------------------------------------------------------------------------- snapshot


def _snapshot(args: argparse.Namespace) -> int:
    from consumer.loop import build_engine
    from consumer.snapshot import RedisStates, snapshot_lines
    from consumer.sources import parse_instant

    settings = _settings(args)
    as_of = parse_instant(args.as_of, "--as-of") if args.as_of else None
    store = _redis_store(settings.redis_url, settings)
    states = RedisStates(settings.redis_url, settings.key_prefix)
    try:
        engine = build_engine(settings, store)
        if as_of is None:
            as_of = store.watermark()  # "now" in event time, as the service sees it
        t0 = time.monotonic()
        ids = states.user_ids()
        progress = None if args.quiet else Progress(len(ids), unit="users")
        n = write_lines(args.out, snapshot_lines(states, engine, as_of), progress)
    finally:
        states.close()
        store.close()
    print(
        f"tierstream: wrote {n:,} users under key prefix {settings.key_prefix!r} to "
        f"{args.out} in {time.monotonic() - t0:.1f} s",
        file=sys.stderr,
    )
    return 0


# --------------------------------------------------------------------------- inspect


def _inspect(args: argparse.Namespace) -> int:
    from consumer import user_view
    from consumer.snapshot import state_time
    from consumer.sources import parse_instant
    from online_models.user_state import UserState

    settings = _settings(args)
    as_of = parse_instant(args.as_of, "--as-of") if args.as_of else None
    if args.replay is None:
        if args.csv_map or args.event_type or args.until:
            raise UserError("--csv-map, --event-type and --until need --replay FILE")
        engine, raw, where, watermark = _stored_user(settings, args.user_id)
        as_of = as_of if as_of is not None else watermark
    else:
        engine, raw, where, watermark = _replayed_user(settings, args)
        as_of = as_of if as_of is not None else watermark
    if raw is None:
        raise UserError(f"no user {args.user_id!r} in {where}: check the user id")
    state = UserState.from_json(orjson.loads(raw))
    view = engine.explain(state, state_time(state) if as_of is None else as_of)
    if args.json:
        body = user_view.as_json(args.user_id, view)
        sys.stdout.buffer.write(orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        print(user_view.render(args.user_id, view, as_of_given=as_of is not None))
    return 0


def _stored_user(
    settings: Settings, user_id: str
) -> tuple[TierEngine, bytes | None, str, int | None]:
    """The engine (stored model), the user's state, where it was read, and the store's
    event-time watermark: scores are "as of now" in event time, not as of the user's
    last event."""
    from consumer.loop import build_engine

    store = _redis_store(settings.redis_url, settings)
    try:
        engine = build_engine(settings, store)
        raw = store.get_user(user_id)
        watermark = store.watermark()
    finally:
        store.close()
    where = (
        f"Redis at {mask_url(settings.redis_url)} under key prefix {settings.key_prefix!r} "
        "(TIERSTREAM_KEY_PREFIX)"
    )
    return engine, raw, where, watermark


def _replayed_user(
    settings: Settings, args: argparse.Namespace
) -> tuple[TierEngine, bytes | None, str, int | None]:
    from consumer.sources import open_input, parse_instant
    from consumer.state_store import MemoryStateStore

    until = parse_instant(args.until) if args.until else None
    store = MemoryStateStore()
    with open_input(args.replay, csv_map=args.csv_map, event_type=args.event_type) as source:
        replayer = _replayer(settings, store, lambda _: None, 2000, False)
        replayer.run(source.records, until_ms=until)
    return replayer.engine, store.users.get(args.user_id), args.replay, _replay_now(replayer)


# --------------------------------------------------------------------------- config, demo


def _config(args: argparse.Namespace) -> int:
    from consumer.tier_config import load_engine

    rows = effective_settings(args.environ, file_keys=args.file_keys)
    settings = Settings.from_env(args.environ)
    engine = load_engine(settings.tiers_path)
    tiers = [
        {"name": t.name, "min_score": None if i == 0 else t.min_score}
        for i, t in enumerate(engine.policy.tiers)
    ]
    if args.json:
        body = {
            "settings": {r.name: {"value": r.value, "source": r.source} for r in rows},
            "tiers": tiers,
            "hysteresis": engine.policy.hysteresis,
            "score_weights": engine.scorer.weights,
        }
        sys.stdout.buffer.write(orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n")
        return 0
    width = max(len(r.variable) for r in rows)
    config = args.config or args.environ.get("TIERSTREAM_CONFIG")
    print(f"# settings in force (env > {config or 'no settings file'} > default)")
    for r in rows:
        print(f"{r.variable:<{width}}  {r.value}  [{r.source}]")
    ladder = " < ".join(
        t.name if i == 0 else f"{t.name} ({t.min_score:g})"
        for i, t in enumerate(engine.policy.tiers)
    )
    print(f"# tiers: {ladder}; hysteresis {engine.policy.hysteresis:g}")
    weights = ", ".join(f"{k} {v:g}" for k, v in engine.scorer.weights.items())
    print(f"# value score weights: {weights}")
    return 0


def _model(args: argparse.Namespace) -> int:
    from consumer.model_files import export_model, import_model

    settings = _settings(args)
    store = _redis_store(settings.redis_url, settings)
    try:
        if args.action == "export":
            model = export_model(store, args.file)
            print(f"tierstream: wrote model {model.name} to {args.file}", file=sys.stderr)
        else:
            model = import_model(store, args.file)
            print(f"tierstream: model {model.name} is now the current version", file=sys.stderr)
    finally:
        store.close()
    return 0


def _demo(args: argparse.Namespace) -> int:
    from consumer.demo import DemoConfig, run_demo

    settings = Settings.from_env(args.environ)
    config = DemoConfig(
        users=args.users,
        events=args.events,
        seed=args.seed,
        days=args.days,
        out_dir=args.out_dir,
        tiers_file=settings.tiers_path,
    )
    run_demo(config, stream=sys.stdout, progress_stream=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
