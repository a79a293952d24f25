"""A real Redis Cluster (six redis-server processes) and a Sentinel deployment, started
in a temporary folder on free ports and stopped afterwards; the integration tests'
``names`` (unique topics, group and key prefix on the local stack's Kafka)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.servers import Cluster, SentinelSetup
from tests.integration.conftest import names, stack

__all__ = ["names", "stack"]


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A cluster the module's tests share (none of them breaks it)."""
    cluster = Cluster(tmp_path_factory.mktemp("cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture
def fresh_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A cluster of the test's own (it may kill a node)."""
    cluster = Cluster(tmp_path_factory.mktemp("cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def sentinel_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSetup]:
    setup = SentinelSetup(tmp_path_factory.mktemp("sentinel"))
    yield setup
    setup.stop()


@pytest.fixture
def fresh_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSetup]:
    """A Sentinel deployment of the test's own, quick to fail over (it kills the primary)."""
    setup = SentinelSetup(tmp_path_factory.mktemp("sentinel"), down_after_ms=1000)
    yield setup
    setup.stop()
