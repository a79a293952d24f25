"""``tierstream snapshot``: every user's tier and scores from a deployment's Redis, one
JSON line per user (:mod:`consumer.tools.snapshot`), then per tier its users and its
conversion for treated users and the control group (:mod:`consumer.tools.tier_summary`)."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from typing import Any

import orjson

from consumer.commands.common import add_command, redis_store, settings_from
from consumer.tools.progress import Progress


def register(sub: Any) -> None:
    """Add ``snapshot`` to the sub-commands."""
    p = add_command(
        sub,
        "snapshot",
        help="write every user's tier and scores from Redis (one JSON line per user)",
        description="Reads the user states of a deployment (TIERSTREAM_REDIS_URL, "
        "TIERSTREAM_KEY_PREFIX): one SCAN over the user keys of every partition, then their "
        "states a thousand at a time. Then prints, per tier, its users and the conversion "
        "of its treated users and of the control group (the share of propensity snapshots "
        "followed by a purchase within the label horizon), and the uplift.",
    )
    p.add_argument("--out", required=True, metavar="FILE", help="JSONL to write ('-': stdout)")
    p.add_argument(
        "--summary-out",
        metavar="FILE",
        help="also write the per-tier summary (users, conversion treated and control, "
        "uplift) as JSON",
    )
    p.add_argument(
        "--as-of",
        metavar="TIME",
        help="score everyone as of this event time (default: the deployment's watermark)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=snapshot)


def snapshot(args: argparse.Namespace) -> int:
    """Write the snapshot; say how many users it holds."""
    from consumer.service.loop import build_engine
    from consumer.tools.snapshot import RedisStates, snapshot_lines, write_lines
    from consumer.tools.sources import parse_instant
    from consumer.tools.tier_summary import summary_table, tier_summary

    settings = settings_from(args)
    as_of = parse_instant(args.as_of, "--as-of") if args.as_of else None
    store = redis_store(settings.redis_url, settings)
    states = RedisStates(store)
    try:
        engine = build_engine(settings, store)
        if as_of is None:
            as_of = store.watermark()  # "now" in event time, as the service sees it
        t0 = time.monotonic()
        ids = states.user_ids()
        progress = None if args.quiet else Progress(len(ids), unit="users")
        tiers: Counter[str] = Counter()
        lines = snapshot_lines(states, engine, as_of, tiers=tiers)
        n = write_lines(args.out, lines, progress)
        summary = tier_summary(tiers, states.conversions(), engine.policy.names)
    finally:
        store.close()
    print(
        f"tierstream: wrote {n:,} users under key prefix {settings.key_prefix!r} to "
        f"{args.out} in {time.monotonic() - t0:.1f} s",
        file=sys.stderr,
    )
    print(summary_table(summary), file=sys.stderr)
    if args.summary_out:
        write_lines(args.summary_out, [orjson.dumps(summary, option=orjson.OPT_INDENT_2)])
    return 0
