"""The state store's protocol (:mod:`tests.integration.store_contract`) on the memory
store of the embedded mode and replays: the same contract as Redis, each handle of one
memory an instance of its own (:meth:`MemoryStateStore.handle`)."""

from __future__ import annotations

import pytest

from consumer.service.state_store import MemoryStateStore
from tests.integration.store_contract import *  # noqa: F403  (the contract's tests)
from tests.integration.store_contract import MakeStore


@pytest.fixture
def make_store() -> MakeStore:
    memory = MemoryStateStore()
    return memory.handle


def test_kept_states_hold_no_more_memory_than_their_bytes() -> None:
    """A state is kept in a block of its own size, not in the larger buffer the JSON
    encoder wrote it into (about 8 KB for a 2 KB state): a memory replay keeps one per
    user."""
    import tracemalloc

    import orjson

    from consumer.service.state_store import PartitionWrite, SaveSet

    store = MemoryStateStore()
    store.acquire([("t", 0)])
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        states = {f"u{i}": orjson.dumps({"features": [i + 0.5] * 150}) for i in range(200)}
        size = sum(len(v) for v in states.values())
        txn = store.begin([("t", 0)])
        txn.load({("t", 0): list(states)}, {})
        txn.save_partitions(SaveSet({("t", 0): PartitionWrite(states)}))
        del states, txn
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 1.5 * size, (kept, size)
