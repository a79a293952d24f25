"""Integration tests need the real Kafka broker and Redis server: `make stack-up`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from kafka import KafkaAdminClient

from tests.integration.support import KAFKA, REDIS, Names

_checked: dict[str, str | None] = {}


def _stack_problem() -> str | None:
    if "problem" not in _checked:
        problem = None
        try:
            redis.Redis.from_url(REDIS, socket_connect_timeout=3).ping()
        except redis.RedisError as exc:
            problem = f"Redis at {REDIS} is unreachable ({exc})"
        try:
            KafkaAdminClient(bootstrap_servers=KAFKA, bootstrap_timeout_ms=10_000).close()
        except Exception as exc:
            problem = f"Kafka at {KAFKA} is unreachable ({exc})"
        _checked["problem"] = problem
    return _checked["problem"]


@pytest.fixture
def stack() -> None:
    """Fails (never skips) when the stack is down: a skipped integration test hides bugs."""
    problem = _stack_problem()
    if problem:
        pytest.fail(f"{problem}: start the stack with `make stack-up`", pytrace=False)


@pytest.fixture
def names(stack: None) -> Iterator[Names]:
    """Unique topics, group and Redis key prefix; the keys are deleted afterwards."""
    n = Names.fresh()
    yield n
    r = redis.Redis.from_url(REDIS)
    keys = list(r.scan_iter(match=f"{n.prefix}:*", count=1000))
    for i in range(0, len(keys), 1000):
        r.delete(*keys[i : i + 1000])
    r.close()
