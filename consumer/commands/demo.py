"""``tierstream demo``: generate a stream and run the whole pipeline in this process, no
server; a summary on the terminal and an HTML report (:mod:`consumer.demo.pipeline`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from consumer.commands.common import add_command
from consumer.demo.config import DemoConfig
from consumer.service.gc_settings import settle_collector
from consumer.service.settings import Settings


def register(sub: Any) -> None:
    """Add ``demo`` to the sub-commands; its defaults are :class:`DemoConfig`'s."""
    d = DemoConfig()
    p = add_command(
        sub,
        "demo",
        help="generate a stream and run the whole pipeline in this process, no server",
    )
    p.add_argument("--users", type=int, default=d.users, help="how many synthetic users")
    p.add_argument("--events", type=int, default=d.events, help="how many records in all")
    p.add_argument("--seed", type=int, default=d.seed, help="the generator's seed")
    p.add_argument("--days", type=int, default=d.days, help="event-time horizon in days")
    p.add_argument("--out-dir", type=Path, default=d.out_dir, help="where the report goes")
    p.set_defaults(func=demo)


def demo(args: argparse.Namespace) -> int:
    """Run the demo with the arguments' sizes."""
    from consumer.demo.pipeline import run_demo

    settings = Settings.from_env(args.environ)
    config = DemoConfig(
        users=args.users,
        events=args.events,
        seed=args.seed,
        days=args.days,
        out_dir=args.out_dir,
        tiers_file=settings.tiers_path,
    )
    settle_collector()
    run_demo(config, stream=sys.stdout, progress_stream=sys.stderr)
    return 0
