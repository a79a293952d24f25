"""``tierstream run``: the service. Consumes the input topic as a member of the consumer
group and publishes tier changes until SIGTERM (or, with ``--stop-when-idle``, until it
has caught up)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from typing import Any

from consumer.commands.common import add_command
from consumer.service.gc_settings import settle_collector
from consumer.service.settings import Settings

log = logging.getLogger("tierstream")
#: Exit status of a catch-up run (--stop-when-idle) that gave up with records left.
LAG_LEFT_STATUS = 3


def register(sub: Any) -> None:
    """Add ``run`` to the sub-commands."""
    p = add_command(
        sub,
        "run",
        help="consume the input topic and publish tier changes (settings: TIERSTREAM_* env)",
    )
    p.add_argument(
        "--stop-when-idle",
        type=float,
        metavar="SECONDS",
        help="stop once no record arrived for SECONDS and the group has consumed every "
        f"partition to its end (catch-up runs, tests); exit status {LAG_LEFT_STATUS} if it "
        "gave up with records left",
    )
    p.add_argument(
        "--freeze-model",
        action="store_true",
        help="score with the stored model version and learn nothing (TIERSTREAM_FREEZE_MODEL)",
    )
    p.add_argument(
        "--model-file",
        metavar="FILE",
        help="score with this exported model, frozen (TIERSTREAM_MODEL_FILE)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the service until it is stopped; print its totals."""
    from consumer.service.loop import Service

    settings = Settings.from_env(args.environ)
    if args.freeze_model or args.model_file:
        settings = dataclasses.replace(
            settings,
            freeze_model=settings.freeze_model or args.freeze_model,
            model_file=args.model_file or settings.model_file,
        )
        settings.check()
    service = Service(settings)
    service.install_signal_handlers()
    log.info(
        "consuming %s as group %s; tier changes -> %s, DLQ -> %s",
        settings.input_topic,
        settings.group_id,
        settings.output_topic,
        settings.dlq_topic,
    )
    settle_collector()
    t0 = time.monotonic()
    summary = service.run(stop_when_idle=args.stop_when_idle)
    elapsed = time.monotonic() - t0
    results = ", ".join(f"{k} {v}" for k, v in sorted(summary.results.items())) or "none"
    print(
        f"tierstream: {summary.records} records in {summary.batches} batches "
        f"({results}); {summary.tier_changes} tier changes; {elapsed:.1f} s",
        file=sys.stderr,
    )
    if summary.learning_rebases:
        dropped = summary.learning_dropped
        print(
            f"tierstream: learning learnt again {summary.learning_rebases} times on a model "
            "version another instance wrote meanwhile"
            + (f"; dropped in {dropped} batches" if dropped else ""),
            file=sys.stderr,
        )
    if summary.lag_left:
        left = ", ".join(f"{p}: {n}" for p, n in sorted(summary.lag_left.items()))
        print(
            f"tierstream: stopped with {sum(summary.lag_left.values())} records left "
            f"unconsumed by group {settings.group_id} ({left})",
            file=sys.stderr,
        )
        return LAG_LEFT_STATUS
    if args.stop_when_idle is not None:
        print(
            f"tierstream: caught up: every partition of {settings.input_topic} consumed to "
            f"its end by group {settings.group_id}",
            file=sys.stderr,
        )
    return 0
