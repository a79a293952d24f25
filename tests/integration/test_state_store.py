"""The state store's protocol (:mod:`tests.integration.store_contract`) against the real
single Redis server of the local stack (`make stack-up`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from consumer.service.redis_store import RedisStateStore
from tests.integration.store_contract import *  # noqa: F403  (the contract's tests)
from tests.integration.store_contract import MakeStore
from tests.integration.support import REDIS, Names

pytestmark = pytest.mark.integration


@pytest.fixture
def make_store(names: Names) -> Iterator[MakeStore]:
    stores: list[RedisStateStore] = []

    def make() -> RedisStateStore:
        store = RedisStateStore(REDIS, prefix=names.prefix)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()
