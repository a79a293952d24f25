"""``tierstream generate``: a realistic synthetic event stream (:mod:`consumer.demo.synthetic`),
to a JSONL file or straight into a Kafka topic."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from consumer.commands.common import add_command
from consumer.service.errors import UserError
from consumer.service.settings import Settings
from consumer.tools.progress import Progress


def register(sub: Any) -> None:
    """Add ``generate`` to the sub-commands."""
    p = add_command(sub, "generate", help="write a realistic synthetic event stream")
    p.add_argument("--users", type=int, default=1000, help="how many users")
    p.add_argument("--events", type=int, default=50_000, help="how many records in all")
    p.add_argument("--seed", type=int, default=42, help="the same seed gives the same bytes")
    p.add_argument(
        "--days",
        type=int,
        default=None,
        help="event-time horizon in days (default 180; 730 with --purchases-only)",
    )
    p.add_argument(
        "--purchases-only",
        action="store_true",
        help="an order export instead of a clickstream: purchases only, few per customer, "
        "months apart, heavy-tailed amounts, a category per order (--events is not used: "
        "the customers' buying patterns decide how many orders there are)",
    )
    p.add_argument(
        "--types",
        choices=("mixed", "separated"),
        default="mixed",
        help="the clickstream's customer types: five that overlap by design (mixed), or "
        "three far apart in the traits segments are made of (separated: big spenders, "
        "browsers, occasional small buyers)",
    )
    p.add_argument(
        "--bad-fraction", type=float, default=0.0, help="share of malformed records (0..1)"
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", type=Path, help="JSONL file to write ('-' for stdout)")
    where.add_argument("--topic", help="Kafka topic to produce to (TIERSTREAM_KAFKA_BOOTSTRAP)")
    p.add_argument(
        "--partitions", type=int, default=1, help="partitions when --topic does not exist yet"
    )
    p.add_argument("--truth-out", type=Path, help="JSONL of each user's latent type")
    p.set_defaults(func=generate)


def generate(args: argparse.Namespace) -> int:
    """Generate the stream where the arguments say."""
    from consumer.demo import orders, synthetic
    from consumer.demo.customer_types import PROFILES, SEPARATED_PROFILES
    from consumer.tools.snapshot import write_lines

    if args.users <= 0 or args.events <= 0:
        raise UserError("--users and --events must be positive")
    if not 0.0 <= args.bad_fraction <= 1.0:
        raise UserError("--bad-fraction must be between 0 and 1")
    if args.days is not None and args.days <= 0:
        raise UserError("--days must be positive")
    truth: Iterator[dict[str, str]]
    records: Iterable[synthetic.GeneratedRecord]
    if args.purchases_only:
        if args.bad_fraction or args.types != "mixed":
            raise UserError(
                "--bad-fraction and --types are for the clickstream, not --purchases-only"
            )
        order_config = orders.OrderConfig(users=args.users, seed=args.seed, days=args.days or 730)
        records = list(orders.generate_orders(order_config))
        args.events = len(records)
        truth = orders.order_truth(order_config)
    else:
        config = synthetic.GeneratorConfig(
            users=args.users,
            events=args.events,
            seed=args.seed,
            days=args.days or 180,
            bad_fraction=args.bad_fraction,
            profiles=SEPARATED_PROFILES if args.types == "separated" else PROFILES,
        )
        records = synthetic.generate(config)
        truth = synthetic.truth(config)
    if args.topic:
        from consumer.service.kafka_io import produce_records

        settings = Settings.from_env(args.environ)
        n = produce_records(
            settings.kafka,
            args.topic,
            ((r.key, r.value) for r in records),
            partitions=args.partitions,
            progress=Progress(args.events),
        )
    else:
        progress = Progress(args.events)
        n = write_lines(args.out, (r.value for r in records), progress)
        progress.finish(n)
    print(f"tierstream: generated {n} records", file=sys.stderr)
    if args.truth_out:
        write_lines(args.truth_out, (orjson.dumps(t) for t in truth))
    return 0
