"""The ``tierstream`` command.

Errors a user can cause (a bad setting, an unreachable server, a missing file) print one
line starting with ``tierstream: error:`` and exit with status 2; anything else is a bug
and shows its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import orjson

from consumer.errors import UserError
from consumer.settings import Settings

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
    return parser


def _run(args: argparse.Namespace) -> int:
    from consumer.loop import Service

    settings = Settings.from_env()
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

        settings = Settings.from_env()
        n = produce_records(
            settings.kafka_bootstrap,
            args.topic,
            ((r.key, r.value) for r in records),
            partitions=args.partitions,
            progress=_progress(args.events),
        )
    else:
        n = _write_lines(args.out, (r.value for r in records), _progress(args.events))
    print(f"tierstream: generated {n} records", file=sys.stderr)
    if args.truth_out:
        _write_lines(args.truth_out, (orjson.dumps(t) for t in synthetic.truth(config)), None)
    return 0


def _progress(total: int) -> _Progress:
    return _Progress(total)


class _Progress:
    """A one-line progress report on stderr, at most every half second."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.t0 = self.last = time.monotonic()

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last < 0.5 and done < self.total:
            return
        self.last = now
        rate = done / max(now - self.t0, 1e-9)
        end = "\n" if done >= self.total else ""
        print(f"\r  {done}/{self.total} records, {rate:,.0f}/s", end=end, file=sys.stderr)


def _write_lines(path: Path, lines: Iterable[bytes], progress: _Progress | None) -> int:
    out = sys.stdout.buffer if str(path) == "-" else None
    try:
        fh = out or open(path, "wb")  # noqa: SIM115 - closed below unless stdout
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror}") from None
    n = 0
    try:
        for line in lines:
            fh.write(line)
            fh.write(b"\n")
            n += 1
            if progress and n % 1000 == 0:
                progress(n)
        if progress:
            progress(progress.total if n >= progress.total else n)
    finally:
        if out is None:
            fh.close()
    return n


if __name__ == "__main__":
    sys.exit(main())
