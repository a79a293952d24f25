"""``tierstream model export|import FILE``: the group's global model to or from a JSON
file (:mod:`consumer.service.model_files`); ``tierstream model fit FILE --out MODEL``: a
model fitted from history (:mod:`consumer.tools.model_fit`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from consumer.commands.common import add_command, redis_store, settings_from
from consumer.service.errors import UserError
from consumer.service.gc_settings import settle_collector
from consumer.service.records import InputRecord
from consumer.service.settings import Settings


def register(sub: Any) -> None:
    """Add ``model`` to the sub-commands."""
    p = add_command(
        sub,
        "model",
        help="export the group's global model to a JSON file, import one (Redis), or fit "
        "one from history",
        description="export FILE writes the stored global model (TIERSTREAM_REDIS_URL, "
        "TIERSTREAM_KEY_PREFIX); import FILE checks a model file and makes it the current "
        "version. Score with a file instead: TIERSTREAM_MODEL_FILE=FILE. fit FILE --out "
        "MODEL replays an event file (JSONL or CSV, as replay reads it) in memory through "
        "the same learners and writes the model, to import before going live.",
    )
    p.add_argument(
        "action",
        choices=["export", "import", "fit"],
        help="export the stored model, import FILE, or fit a model from the events in FILE",
    )
    p.add_argument(
        "file", metavar="FILE", type=Path, help="the model file (JSON); fit: the event file"
    )
    p.add_argument("--out", type=Path, help="fit: where to write the model (JSON)")
    p.add_argument("--passes", type=int, default=1, help="fit: replays of the history (1)")
    p.add_argument("--until", metavar="TIME", help="fit: only events at or before TIME")
    p.add_argument("--csv-map", metavar="FIELD=COLUMN,...", help="fit: read FILE as CSV")
    p.add_argument("--event-type", metavar="TYPE", help="fit: event type of CSV rows")
    p.add_argument("--tiers", metavar="FILE", help="fit: tier config (TIERSTREAM_TIERS_FILE)")
    p.set_defaults(func=model_file)


def model_file(args: argparse.Namespace) -> int:
    """Export or import the model."""
    from consumer.service.model_files import export_model, import_model

    settings = settings_from(args)
    if args.action == "fit":
        return _fit(args, settings)
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


def _fit(args: argparse.Namespace, settings: Settings) -> int:
    from consumer.service.model_files import write_model
    from consumer.tools.model_fit import fit_model
    from consumer.tools.sources import open_input, parse_instant

    if args.out is None:
        raise UserError("model fit needs --out FILE, where the model is written")
    if args.passes < 1:
        raise UserError("--passes must be at least 1")

    def records() -> Iterator[InputRecord]:
        with open_input(str(args.file), csv_map=args.csv_map, event_type=args.event_type) as src:
            yield from src.records

    until = parse_instant(args.until) if args.until else None
    settle_collector()
    try:
        model = fit_model(settings, records, passes=args.passes, until_ms=until)
    except ValueError as exc:
        raise UserError(f"model fit: {exc}") from None
    write_model(model, args.out)
    print(
        f"tierstream: fitted model {model.name} ({model.samples_seen} samples, "
        f"{model.labels_seen} labels, {len(model.centroids)} segments) to {args.out}",
        file=sys.stderr,
    )
    return 0
