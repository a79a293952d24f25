"""``tierstream dlq purge USER_ID...``: remove users' records from the DLQ topic (after
``tierstream forget``, for instance; :mod:`consumer.tools.dlq_purge`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from consumer.commands.common import add_command
from consumer.service.settings import Settings
from consumer.tools.progress import Progress


def register(sub: Any) -> None:
    """Add ``dlq`` to the sub-commands."""
    p = add_command(
        sub,
        "dlq",
        help="remove users' records from the DLQ topic (purge)",
        description="purge USER_ID...: for each partition of the DLQ topic "
        "(TIERSTREAM_DLQ_TOPIC) holding records of these users, copy its other records "
        "to its end and delete everything before. A record is a user's when its key is "
        "the user id or the original record it carries has that user_id.",
    )
    p.add_argument("action", choices=["purge"], help="what to do")
    p.add_argument("user_ids", nargs="+", metavar="USER_ID", help="the users whose records go")
    p.add_argument("--dry-run", action="store_true", help="count, change nothing")
    p.set_defaults(func=dlq)


def dlq(args: argparse.Namespace) -> int:
    """Purge, and say what went."""
    from consumer.tools.dlq_purge import purge

    settings = Settings.from_env(args.environ)
    progress = Progress(unit="records")
    result = purge(
        settings.kafka,
        settings.dlq_topic,
        set(args.user_ids),
        dry_run=args.dry_run,
        progress=progress,
    )
    progress.clear()
    removed, copied = sum(result.removed.values()), sum(result.copied.values())
    verb = "would remove" if args.dry_run else "removed"
    print(
        f"tierstream: {verb} {removed} records of {len(set(args.user_ids))} users from "
        f"{settings.dlq_topic} (partitions {sorted(result.removed)}); {copied} other records "
        f"{'would be' if args.dry_run else 'were'} copied forward",
        file=sys.stderr,
    )
    return 0
