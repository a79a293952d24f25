"""The state store's protocol (:mod:`tests.integration.store_contract`) on a real Redis
Cluster and behind Sentinel: the same code as on one server, every atomic write in one
hash slot."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from consumer.service.redis_store import RedisStateStore
from tests.cluster.servers import Cluster, SentinelSetup
from tests.integration.store_contract import *  # noqa: F403  (the contract's tests)
from tests.integration.store_contract import MakeStore

pytestmark = pytest.mark.redis_cluster


@pytest.fixture(params=["cluster", "sentinel"])
def make_store(
    request: pytest.FixtureRequest, redis_cluster: Cluster, sentinel_setup: SentinelSetup
) -> Iterator[MakeStore]:
    url = redis_cluster.url if request.param == "cluster" else sentinel_setup.url
    prefix = f"ct-{uuid.uuid4().hex[:8]}"
    stores: list[RedisStateStore] = []

    def make() -> RedisStateStore:
        store = RedisStateStore(url, prefix=prefix)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()
