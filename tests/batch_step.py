"""The service's batch step over the packaged tier config with a frozen model (no
learning: the same scores whatever the batches), for tests that drive the commit
protocol (:class:`~consumer.service.checkpoint.Checkpoint`) directly."""

from __future__ import annotations

from consumer.service.batch import BatchStep
from consumer.service.tier_config import DEFAULT_TIERS_FILE, load_engine
from schemas.decode import EventDecoder


def frozen_step() -> BatchStep:
    """Tier changes to ``changes``, dead letters to ``dlq``."""
    return BatchStep(
        load_engine(DEFAULT_TIERS_FILE, frozen=True),
        EventDecoder(),
        output_topic="changes",
        dlq_topic="dlq",
        dlq_max_copy_bytes=1024,
    )
