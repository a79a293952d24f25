"""What several sub-commands share: the help format, the settings with their
command-line overrides, and opening the deployment's Redis.

>>> parser = argparse.ArgumentParser(formatter_class=HelpFormatter)
>>> _ = parser.add_argument("--batch-size", type=int, default=2000, help="records per batch")
>>> _ = parser.add_argument("--out", help="where to write")
>>> "records per batch (default: 2000)" in parser.format_help()
True
>>> "where to write (default" in parser.format_help()
False
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from consumer.service.errors import StateStoreUnavailable, UserError
from consumer.service.settings import Settings, mask_url

if TYPE_CHECKING:
    from consumer.service.redis_store import RedisStateStore

__all__ = ["HelpFormatter", "add_command", "redis_store", "settings_from"]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows each option's default after its help, unless there is none to show (None,
    a flag that is off) or the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (
            "%(default)" in text
            or action.default in (None, False, argparse.SUPPRESS)
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)"


def add_command(
    sub: Any, name: str, *, help: str, description: str | None = None
) -> argparse.ArgumentParser:
    """A sub-command's parser, in the house help format."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help,
        description=description or help[:1].upper() + help[1:] + ".",
        formatter_class=HelpFormatter,
    )
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    """The settings in force (environment, settings file), with the command's
    ``--tiers`` and ``--key-prefix`` over them when it has them."""
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
        settings.check()
    return settings


def redis_store(url: str, settings: Settings) -> RedisStateStore:
    """The deployment's state in Redis at ``url``, checked reachable; the error names the
    URL with its password masked."""
    from consumer.service.redis_store import RedisStateStore

    store = RedisStateStore(
        url,
        prefix=settings.key_prefix,
        topic=settings.input_topic,
        max_timers=settings.max_timers_per_batch,
    )
    try:
        store.ping()
    except StateStoreUnavailable as exc:
        message = str(exc).replace(url, mask_url(url))
        if url != settings.redis_url:  # given with --state
            message = message.replace("or set TIERSTREAM_REDIS_URL", "or check --state")
        raise StateStoreUnavailable(message) from None
    return store
