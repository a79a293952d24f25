"""``tierstream state repartition``: after the input topic got more partitions, move the
users' states and timers to the partitions the new count routes them to
(:mod:`consumer.tools.repartition`); ``tierstream state recount``: count the users of a
state written before tierstream counted them by tier (:mod:`consumer.tools.recount`).
Both with the service stopped."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from consumer.commands.common import add_command, redis_store, settings_from
from consumer.service.errors import UserError

if TYPE_CHECKING:
    from consumer.service.redis_store import RedisStateStore
    from consumer.tools.legacy_layout import LegacyMigration
    from online_models.engine import Horizons


def register(sub: Any) -> None:
    """Add ``state`` to the sub-commands."""
    p = add_command(
        sub,
        "state",
        help="maintain the state in Redis: repartition after the input topic grew, recount "
        "the users per tier",
        description="repartition: with every instance stopped, move each user's state and "
        "timer to the partition the input topic's new partition count routes them to, set "
        "the new partitions' watermarks, count the users per tier again, and record the "
        "count, so that the service starts again. recount: with every instance stopped, "
        "count each partition's users per tier from their states (for a state written "
        "before tierstream counted them, which the service refuses until then). Both are "
        "safe to run again after a crash. Settings: TIERSTREAM_REDIS_URL, "
        "TIERSTREAM_KEY_PREFIX, TIERSTREAM_INPUT_TOPIC, TIERSTREAM_KAFKA_BOOTSTRAP, "
        "TIERSTREAM_GROUP_ID, TIERSTREAM_TIERS_FILE, TIERSTREAM_STATE_TTL_DAYS.",
    )
    p.add_argument("action", choices=["repartition", "recount"], help="what to do")
    p.add_argument(
        "--partitions",
        type=int,
        metavar="N",
        help="the new partition count (default: the input topic's, asked of Kafka); "
        "another count than Kafka's only with --dry-run (planning a change)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="count what would move (or count), change nothing"
    )
    p.add_argument(
        "--from-legacy",
        action="store_true",
        help="move a state written before the partitioned key layout (tierstream before "
        "issue 9) into it, for the input topic's partition count",
    )
    p.set_defaults(func=state)


def _say(line: str) -> None:
    print(f"tierstream: {line}", file=sys.stderr)


def _from_legacy(migration: LegacyMigration) -> int:
    report = migration.run()
    verb = "would move" if migration.dry_run else "moved"
    _say(
        f"{verb} the old layout's state into {report.partitions} partitions of "
        f"{report.topic}" + ("" if migration.dry_run else "; the service may start")
    )
    return 0


def _check_stopped(
    args: argparse.Namespace, group: str, topic: str, kafka: int | None, members: int
) -> None:
    """A real move: to Kafka's count, with no instance up."""
    if args.partitions is not None and args.partitions != kafka:
        raise UserError(
            f"--partitions {args.partitions}: the input topic {topic} has {kafka}; another "
            "count is for --dry-run only"
        )
    if members:
        raise UserError(
            f"the consumer group {group} has {members} members: stop every instance first"
        )


def _recount(store: RedisStateStore, topic: str, horizons: Horizons, dry_run: bool) -> int:
    from consumer.tools.recount import Recount

    recorded = store.partition_counts().get(topic)
    if recorded is None:
        raise UserError(
            f"no state of topic {topic!r} under key prefix {store.prefix!r}: nothing to "
            "count (check TIERSTREAM_INPUT_TOPIC and TIERSTREAM_KEY_PREFIX)"
        )
    report = Recount(store, topic, recorded, horizons, dry_run=dry_run, say=_say).run()
    tiers = ", ".join(f"{t}: {n:,}" for t, n in sorted(report.population.items())) or "none"
    verb = "would count" if dry_run else "counted"
    _say(
        f"{verb} {report.users:,} users of {topic} in {recorded} partitions ({tiers}); "
        f"{report.unreadable:,} unreadable states left out, {report.persisted:,} "
        f"time-to-lives removed, {report.armed:,} expiries armed"
        + ("" if dry_run else "; the service may start")
    )
    return 0


def state(args: argparse.Namespace) -> int:
    """Repartition or recount, and say what was done."""
    from consumer.service.kafka_io import topic_and_group
    from consumer.service.redis_connection import REDIS_FAILURES
    from consumer.service.tier_config import load_engine
    from consumer.tools.legacy_layout import LegacyMigration
    from consumer.tools.repartition import Repartition

    settings = settings_from(args)
    topic = settings.input_topic
    horizons = load_engine(settings.tiers_path, state_ttl_days=settings.state_ttl_days).horizons
    store = redis_store(settings.redis_url, settings)
    try:
        kafka, members = topic_and_group(settings.kafka, topic, settings.group_id)
        new = args.partitions if args.partitions is not None else kafka
        if new is None:
            raise UserError(f"the input topic {topic} does not exist (TIERSTREAM_INPUT_TOPIC)")
        if not args.dry_run:
            _check_stopped(args, settings.group_id, topic, kafka, members)
        say = _say
        try:
            if args.action == "recount":
                return _recount(store, topic, horizons, args.dry_run)
            if args.from_legacy:
                return _from_legacy(
                    LegacyMigration(
                        store, topic, new, dry_run=args.dry_run, say=say, horizons=horizons
                    )
                )
            report = Repartition(
                store, topic, new, dry_run=args.dry_run, say=say, horizons=horizons
            ).run()
        except REDIS_FAILURES as exc:
            raise UserError(
                f"Redis failed during the {args.action} ({exc}); run it again: what is "
                "done stays done, the rest is done then"
            ) from None
    finally:
        store.close()
    if report.old == report.new:
        print(
            f"tierstream: the state of {topic} is already laid out for {new} partitions",
            file=sys.stderr,
        )
        return 0
    verb = "would move" if args.dry_run else "moved"
    print(
        f"tierstream: {verb} {report.moved:,} of {report.users:,} users and "
        f"{report.timers_moved:,} timers of {topic} from {report.old} to {report.new} "
        f"partitions; new partitions start at watermark {report.watermark}"
        + ("" if args.dry_run else "; the service may start"),
        file=sys.stderr,
    )
    return 0
