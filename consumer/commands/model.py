"""``tierstream model export|import FILE``: the group's global model to or from a JSON
file (:mod:`consumer.service.model_files`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from consumer.commands.common import add_command, redis_store, settings_from


def register(sub: Any) -> None:
    """Add ``model`` to the sub-commands."""
    p = add_command(
        sub,
        "model",
        help="export the group's global model to a JSON file, or import one (Redis)",
        description="export FILE writes the stored global model (TIERSTREAM_REDIS_URL, "
        "TIERSTREAM_KEY_PREFIX); import FILE checks a model file and makes it the current "
        "version. Score with a file instead: TIERSTREAM_MODEL_FILE=FILE.",
    )
    p.add_argument(
        "action", choices=["export", "import"], help="export the stored model, or import FILE"
    )
    p.add_argument("file", metavar="FILE", type=Path, help="the model file (JSON)")
    p.set_defaults(func=model_file)


def model_file(args: argparse.Namespace) -> int:
    """Export or import the model."""
    from consumer.service.model_files import export_model, import_model

    settings = settings_from(args)
    store = redis_store(settings.redis_url, settings)
    try:
        if args.action == "export":
            model = export_model(store, args.file)
            print(f"tierstream: wrote model {model.name} to {args.file}", file=sys.stderr)
        else:
            model = import_model(store, args.file)
            print(f"tierstream: model {model.name} is now the current version", file=sys.stderr)
    finally:
        store.close()
    return 0
