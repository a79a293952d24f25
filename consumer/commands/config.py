"""``tierstream config --show``: every setting in force with where it came from, and the
tier ladder, secrets masked (:mod:`consumer.tools.config_view`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from consumer.commands.common import add_command
from consumer.service.settings import Settings
from consumer.service.settings_file import CONFIG_ENV
from consumer.tools.config_view import effective_settings


def register(sub: Any) -> None:
    """Add ``config`` to the sub-commands."""
    p = add_command(sub, "config", help="show the settings in force, secrets masked")
    p.add_argument("--show", action="store_true", help="print the settings (the default)")
    p.add_argument("--json", action="store_true", help="as JSON")
    p.set_defaults(func=show_config)


def show_config(args: argparse.Namespace) -> int:
    """Print the settings, the tiers and the score weights."""
    from consumer.service.tier_config import load_engine

    rows = effective_settings(args.environ, file_keys=args.file_keys)
    settings = Settings.from_env(args.environ)
    engine = load_engine(settings.tiers_path)
    tiers = [
        {"name": t.name, "min_score": None if i == 0 else t.min_score}
        for i, t in enumerate(engine.policy.tiers)
    ]
    if args.json:
        body = {
            "settings": {r.name: {"value": r.value, "source": r.source} for r in rows},
            "tiers": tiers,
            "hysteresis": engine.policy.hysteresis,
            "score_weights": engine.scorer.weights,
        }
        sys.stdout.buffer.write(orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n")
        return 0
    width = max(len(r.variable) for r in rows)
    config = args.config or args.environ.get(CONFIG_ENV)
    print(f"# settings in force (env > {config or 'no settings file'} > default)")
    for r in rows:
        print(f"{r.variable:<{width}}  {r.value}  [{r.source}]")
    ladder = " < ".join(
        t.name if i == 0 else f"{t.name} ({t.min_score:g})"
        for i, t in enumerate(engine.policy.tiers)
    )
    print(f"# tiers: {ladder}; hysteresis {engine.policy.hysteresis:g}")
    weights = ", ".join(f"{k} {v:g}" for k, v in engine.scorer.weights.items())
    print(f"# value score weights: {weights}")
    return 0
