"""``tierstream inspect USER_ID``: one user's tier, since when, scores, and why; from
the deployment's Redis or from a replay of a file (:mod:`consumer.tools.user_view`)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

import orjson

from consumer.commands.common import add_command, redis_store, settings_from
from consumer.service.errors import UserError
from consumer.service.settings import Settings, mask_url

if TYPE_CHECKING:
    from online_models.engine import TierEngine


def register(sub: Any) -> None:
    """Add ``inspect`` to the sub-commands."""
    p = add_command(
        sub,
        "inspect",
        help="show one user's tier and why (from Redis, or from a replay of a file)",
    )
    p.add_argument("user_id", metavar="USER_ID", help="the user to show")
    p.add_argument(
        "--replay",
        metavar="FILE",
        help="replay FILE in memory and look there instead of in Redis",
    )
    p.add_argument("--csv-map", metavar="FIELD=COLUMN,...", help="with --replay: read CSV")
    p.add_argument("--event-type", metavar="TYPE", help="with --replay and --csv-map")
    p.add_argument("--until", metavar="TIME", help="with --replay: only events up to TIME")
    p.add_argument(
        "--as-of",
        metavar="TIME",
        help="score as of this event time (default: the newest event time seen)",
    )
    p.add_argument("--json", action="store_true", help="the full explanation as JSON")
    p.set_defaults(func=inspect_user)


def inspect_user(args: argparse.Namespace) -> int:
    """Print the user's explanation, readable or as JSON."""
    from consumer.tools import user_view
    from consumer.tools.snapshot import state_time
    from consumer.tools.sources import parse_instant
    from online_models.state_codec import decode_state

    settings = settings_from(args)
    as_of = parse_instant(args.as_of, "--as-of") if args.as_of else None
    if args.replay is None:
        if args.csv_map or args.event_type or args.until:
            raise UserError("--csv-map, --event-type and --until need --replay FILE")
        engine, raw, where, watermark = _stored_user(settings, args.user_id)
    else:
        engine, raw, where, watermark = _replayed_user(settings, args)
    as_of = as_of if as_of is not None else watermark
    if raw is None:
        raise UserError(f"no user {args.user_id!r} in {where}: check the user id")
    state = decode_state(raw)
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
    from consumer.service.loop import build_engine

    store = redis_store(settings.redis_url, settings)
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
    from consumer.service.state_store import MemoryStateStore
    from consumer.tools.replay import Replay
    from consumer.tools.sources import open_input, parse_instant

    until = parse_instant(args.until) if args.until else None
    store = MemoryStateStore()
    with open_input(args.replay, csv_map=args.csv_map, event_type=args.event_type) as source:
        replayer = Replay.from_settings(settings, store, emit=lambda _: None, check_keys=False)
        replayer.run(source.records, until_ms=until)
    return replayer.engine, store.users.get(args.user_id), args.replay, replayer.now_ms()
