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
