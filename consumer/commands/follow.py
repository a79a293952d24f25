"""``tierstream follow``: the reference subscriber (:mod:`consumer.tools.follower`): every
user's tier from the current-tier topic, then the changes, duplicates dropped and gaps
reported; a live table of tier populations."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

import orjson

from consumer.commands.common import add_command
from consumer.service import logs
from consumer.service.settings import Settings


def register(sub: Any) -> None:
    """Add ``follow`` to the sub-commands."""
    p = add_command(
        sub,
        "follow",
        help="subscribe as downstream systems should: bootstrap, follow, dedupe, find gaps",
        description="Reads every user's current tier from TIERSTREAM_TIERS_TOPIC, then "
        "follows TIERSTREAM_OUTPUT_TOPIC: a change seen before (same event_id, or a seq "
        "the user already passed) is dropped, a seq that jumps is reported as a gap. Each "
        "duplicate and gap is one JSON line on stdout; the tier populations are redrawn "
        "on stderr every second. The pattern downstream teams should copy: "
        "consumer/tools/follower.py.",
    )
    p.add_argument(
        "--from-beginning",
        action="store_true",
        help="no bootstrap: every change of the change topic from its start",
    )
    p.add_argument(
        "--once", action="store_true", help="stop once the change topic is read to its end"
    )
    p.set_defaults(func=follow_command)


def follow_command(args: argparse.Namespace) -> int:
    """Follow until SIGINT/SIGTERM (or the end, with ``--once``)."""
    from consumer.tools.follow import Report, follow
    from consumer.tools.follower import Follower

    settings = Settings.from_env(args.environ)
    follower = Follower()
    stop = {"now": False}

    def on_signal(*_: object) -> None:
        stop["now"] = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)

    def report(r: Report) -> None:
        line: dict[str, object] = {"kind": r.outcome, "event_id": r.change.get("event_id")}
        line["user_id"] = r.change.get("user_id")
        if r.outcome == "gap":
            gap = follower.gaps[-1]
            line.update(lifetime_start=gap.lifetime_start, missing_seq=gap.missing)
        else:
            line["seq"] = r.change.get("seq")
        sys.stdout.write(orjson.dumps(line).decode() + "\n")
        sys.stdout.flush()

    live = sys.stderr.isatty()

    def tick() -> None:
        if live:
            sys.stderr.write("\x1b[2J\x1b[H" + follower.table() + "\n")

    follow(
        settings.kafka,
        changes_topic=settings.output_topic,
        tiers_topic=None if args.from_beginning else settings.tiers_topic,
        follower=follower,
        once=args.once,
        on_report=report,
        on_tick=tick,
        should_stop=lambda: stop["now"],
    )
    # Log lines still waiting go first, then the table in one write, so a log line from
    # the client's threads never lands between its rows.
    logs.flush()
    sys.stderr.write(follower.table() + "\n")
    sys.stderr.flush()
    return 0
