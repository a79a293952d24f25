"""``tierstream forget USER_ID...``: ask the running service to erase users.

Each request goes to the forget topic (``TIERSTREAM_FORGET_TOPIC``) keyed by the user id
(``schemas/forget-request.v1.json``); the service forwards it into the user's input
partition and, once it has applied the user's earlier events, deletes their state and
timers and publishes an ``erased`` change and a tombstone on the current-tier topic
(:mod:`consumer.service.forget_forwarder`). An erasure pipeline can send the same
requests itself.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from typing import Any

import orjson

from consumer.commands.common import add_command
from consumer.service.errors import UserError
from consumer.service.settings import Settings
from online_models.timefmt import iso_utc_ms


def register(sub: Any) -> None:
    """Add ``forget`` to the sub-commands."""
    p = add_command(
        sub,
        "forget",
        help="ask the service to erase users: state, timers, pending outputs; a tombstone",
        description="Sends one forget request per user to the forget topic "
        "(TIERSTREAM_FORGET_TOPIC). The running service erases each user after applying "
        "the user's earlier events, and publishes an `erased` tier change and a tombstone "
        "on the current-tier topic (TIERSTREAM_TIERS_TOPIC). A later event of the user "
        "starts a new lifetime. DLQ records of the user: `tierstream dlq purge`.",
    )
    p.add_argument("user_ids", nargs="+", metavar="USER_ID", help="the users to erase")
    p.add_argument(
        "--request-id",
        metavar="ID",
        help="your reference, repeated in each `erased` change (default: a new UUID)",
    )
    p.set_defaults(func=forget)


def forget(args: argparse.Namespace) -> int:
    """Send the requests."""
    from consumer.service.kafka_io import produce_records

    settings = Settings.from_env(args.environ)
    bad = [u for u in args.user_ids if not u or len(u) > 256]
    if bad:
        raise UserError(f"not a user id (1 to 256 characters): {bad[0]!r}")
    request_id = args.request_id or f"cli-{uuid.uuid4()}"
    now = iso_utc_ms(time.time_ns() // 1_000_000)
    requests = [
        (
            user.encode(),
            orjson.dumps(
                {
                    "tierstream_control": "forget",
                    "user_id": user,
                    "request_id": request_id,
                    "requested_at": now,
                }
            ),
        )
        for user in dict.fromkeys(args.user_ids)
    ]
    n = produce_records(settings.kafka, settings.forget_topic, requests)
    print(
        f"tierstream: sent {n} forget requests ({request_id}) to {settings.forget_topic}; the "
        f"service erases each user after their earlier events (an `erased` change on "
        f"{settings.output_topic}, a tombstone on {settings.tiers_topic})",
        file=sys.stderr,
    )
    return 0
