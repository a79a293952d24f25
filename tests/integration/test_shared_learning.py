"""Instances learning one model through the real Redis: what a batch learnt is never lost
to a version another instance wrote meanwhile.

Each batch's learning is written after its states (step 3b of
:mod:`consumer.service.checkpoint`), only over the model version its load read. Two ways
lost learning while two instances advanced versions side by side (10-12% of the
samples of the bench's dense workload with two instances, 54-55% of the sparse
workload's samples and labels): a batch whose 3b found a newer
version dropped what it learnt, and a new version written by one instance folded the
other's contribution as it was at the load, then deleted the contribution the other had
saved since. Now the first is learnt again on the stored version (rebased) and the
second is refused by the store (and so rebased too).

Two interleavings: b runs a whole batch during a's 3b (it advances a version: a's
learning meets a newer model), or only its first records, the rest after (it saves a
contribution without advancing: a's new version must fold that one, not the one a
loaded; without the store's check of the contributions a new version drops 9 samples
and 2 labels of b's here).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence

import pytest

from consumer.demo.synthetic import GeneratorConfig, generate
from consumer.service.batch import BatchOutcome, BatchStep
from consumer.service.checkpoint import Checkpoint
from consumer.service.records import InputRecord, OutputRecord
from consumer.service.redis_store import RedisStateStore
from consumer.service.tier_config import DEFAULT_TIERS_FILE, load_engine
from consumer.tools.replay import LocalOffsets, ReplaySink
from online_models.merge import MergePolicy
from schemas.decode import EventDecoder
from tests.bench.redis_memory import learnt
from tests.integration.support import REDIS, Names

pytestmark = pytest.mark.integration

#: Versions every few samples, so that each batch of either instance advances one.
POLICY = MergePolicy(every_samples=15, min_init_samples=15, n_segments=2, segments_max=3)
BATCH = 150


class Member:
    """One instance's learning engine, store handle and commit protocol; ``during_3b``
    runs between its batch's partitions saved and its learning saved."""

    def __init__(self, prefix: str, name: str) -> None:
        engine = load_engine(DEFAULT_TIERS_FILE)
        engine.models.policy = POLICY
        self.prefix = prefix
        self.store = RedisStateStore(REDIS, prefix=prefix)
        self.during_3b: Callable[[], None] | None = None
        self.outcomes: list[BatchOutcome] = []

        def ignore(_: OutputRecord) -> None:
            return None

        self.checkpoint = Checkpoint(
            BatchStep(
                engine,
                EventDecoder(),
                output_topic="changes",
                dlq_topic="dlq",
                dlq_max_copy_bytes=1024,
                instance_id=name,
            ),
            self.store,
            LocalOffsets(),
            ReplaySink(ignore),
            clock_ms=lambda: None,
            timer=lambda: 0.0,
            on_step=self._on_step,
        )

    def _on_step(self, step: str) -> None:
        if step == "save-partitions" and self.during_3b is not None:
            run, self.during_3b = self.during_3b, None
            run()

    def acquire(self, partitions: Sequence[int]) -> None:
        self.checkpoint.recover([("in", p) for p in partitions])

    def run(self, records: Sequence[InputRecord]) -> None:
        self.outcomes.append(self.checkpoint.run_batch(records).outcome)

    def close(self) -> None:
        self.store.close()


def _records() -> dict[int, list[InputRecord]]:
    """A generated stream split over two partitions by user, offsets counted per
    partition."""
    config = GeneratorConfig(users=80, events=2400, seed=1213, days=75)
    parts: dict[int, list[InputRecord]] = {0: [], 1: []}
    for r in generate(config):
        assert r.key is not None
        p = zlib.crc32(r.key) % 2
        parts[p].append(InputRecord("in", p, len(parts[p]), None, r.key, r.value))
    return parts


def _batches(records: list[InputRecord]) -> list[list[InputRecord]]:
    return [records[i : i + BATCH] for i in range(0, len(records), BATCH)]


#: Records of b's batch run during a's 3b: all of them, or the first few.
WHOLE, FIRST_RECORDS = BATCH, 20


@pytest.mark.parametrize("during_3b", [WHOLE, FIRST_RECORDS], ids=["b-advances", "b-contributes"])
def test_two_instances_learn_every_sample_and_label_one_instance_learns(
    names: Names, during_3b: int
) -> None:
    parts = _records()
    one = Member(f"{names.prefix}-one", "solo")
    a, b = Member(names.prefix, "a"), Member(names.prefix, "b")
    try:
        one.acquire([0, 1])
        a.acquire([0])
        b.acquire([1])
        batches_a, batches_b = _batches(parts[0]), _batches(parts[1])
        for i in range(max(len(batches_a), len(batches_b))):
            mine = batches_a[i] if i < len(batches_a) else []
            theirs = batches_b[i] if i < len(batches_b) else []
            one.run([*mine, *theirs])
            if not mine:
                b.run(theirs)
                continue
            # b loads after a's load and saves its learning before a's: every batch
            # of a meets a version (or a contribution) b wrote meanwhile.
            if theirs:
                first = theirs[:during_3b]
                a.during_3b = lambda batch=first: b.run(batch)  # type: ignore[misc]
            a.run(mine)
            if theirs[during_3b:]:
                b.run(theirs[during_3b:])
        reference = learnt(REDIS, one.prefix)
        assert reference[0] > 10 * POLICY.every_samples and reference[1] > 0, reference
        assert learnt(REDIS, a.prefix) == reference
        rebased = sum(o.learning_rebases for o in a.outcomes)
        assert rebased >= len(batches_b) // 2, rebased
        assert not any(o.learning_dropped for o in a.outcomes + b.outcomes)
    finally:
        for m in (one, a, b):
            m.close()
