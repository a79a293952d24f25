"""The ``tierstream`` command: the entry point, and nothing else.

``run`` (the service), ``generate`` (a synthetic stream), ``replay`` (a file through the
service's code path, no Kafka), ``snapshot`` (everyone's tier from Redis), ``inspect``
(one user's tier and why), ``follow`` (the reference subscriber), ``config`` (the settings
in force), ``model`` (export or import the global model), ``state repartition`` (after the
input topic grew), ``forget`` (erase users), ``dlq purge`` (a user's dead letters) and
``demo`` (all of it in one process, no server). Each lives in its own module of
:mod:`consumer.commands`, with its arguments.

Errors a user can cause (a bad setting, an unreachable server, a missing file) print one
line starting with ``tierstream: error:`` and exit with status 2; anything else is a bug
and shows its traceback. Output piped into a reader that stops early (``| head``) ends
the command quietly, as it ends ``cat``.

>>> build_parser().parse_args(["replay", "events.jsonl"]).batch_size
2000
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib import metadata

from consumer.commands import (
    config,
    demo,
    dlq,
    follow,
    forget,
    generate,
    inspect,
    model,
    replay,
    run,
    snapshot,
    state,
)
from consumer.commands.common import HelpFormatter
from consumer.service import logs
from consumer.service.errors import UserError
from consumer.service.settings_file import resolve_environ

#: The sub-commands, in the order ``tierstream --help`` lists them.
COMMANDS = (
    run,
    generate,
    replay,
    snapshot,
    inspect,
    follow,
    config,
    model,
    state,
    forget,
    dlq,
    demo,
)
#: Exit status after the reader of our output went away (128 + SIGPIPE, as a shell says).
BROKEN_PIPE_STATUS = 141


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tierstream`` console script."""
    args = build_parser().parse_args(argv)
    try:
        args.environ, args.file_keys = resolve_environ(args.config)
        logs.configure(args.log_level, args.environ.get("TIERSTREAM_LOG_FORMAT", "text").strip())
        code: int = args.func(args)
        logs.flush()
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    except UserError as exc:
        logs.flush()  # the log lines before it, so that the error is the last line
        print(f"tierstream: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        _discard_stdout()
        return BROKEN_PIPE_STATUS
    return code


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: global options, then one sub-parser per command."""
    parser = argparse.ArgumentParser(
        prog="tierstream",
        description="Online customer segmentation: user events in, tier changes out.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tierstream {_version()}")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning"],
        help="how much to log on stderr",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="TOML settings file (or TIERSTREAM_CONFIG); environment variables win over it",
    )
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def _version() -> str:
    try:
        return metadata.version("tierstream")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "(not installed)"


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that flushing what is left of its buffer at exit
    does not raise a second BrokenPipeError (the way the Python docs advise)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
