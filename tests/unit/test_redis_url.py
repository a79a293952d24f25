"""TIERSTREAM_REDIS_URL's three forms: a single server, Redis Cluster, Sentinel."""

from __future__ import annotations

import pytest
import redis
from redis.sentinel import SentinelConnectionPool

from consumer.service.errors import SettingsError
from consumer.service.redis_connection import connect, parse_redis_url
from consumer.service.settings import Settings


@pytest.mark.parametrize(
    ("url", "kind", "nodes"),
    [
        ("redis://127.0.0.1:6379/0", "single", ()),
        ("rediss://u:p@h/2", "single", ()),
        ("unix:///run/redis.sock?db=1", "single", ()),
        (
            "redis+cluster://h1:7000,h2:7001,[::1]:7002",
            "cluster",
            (("h1", 7000), ("h2", 7001), ("::1", 7002)),
        ),
        ("redis+cluster://h1", "cluster", (("h1", 6379),)),
        ("redis+sentinel://s1,s2:5000/main", "sentinel", (("s1", 26379), ("s2", 5000))),
    ],
)
def test_each_form_is_understood(url: str, kind: str, nodes: tuple[tuple[str, int], ...]) -> None:
    address = parse_redis_url(url)
    assert (address.kind, address.nodes) == (kind, nodes)
    Settings.from_env({"TIERSTREAM_REDIS_URL": url})  # and accepted as a setting


def test_credentials_and_database_reach_the_client() -> None:
    address = parse_redis_url("redis+sentinel://app:p%40ss@127.0.0.1:1/main/3?sentinel_password=sp")
    assert (address.username, address.password, address.sentinel_password) == ("app", "p@ss", "sp")
    client = connect(address)  # no I/O until the first command
    try:
        pool = client.connection_pool
        assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "main"
        assert pool.connection_kwargs["db"] == 3 and pool.connection_kwargs["password"] == "p@ss"
    finally:
        client.close()
    single = connect(parse_redis_url("redis://:pw@127.0.0.1:1/4"))
    assert isinstance(single, redis.Redis) and single.connection_pool.connection_kwargs["db"] == 4
    single.close()


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://:pw@h1:7000/3",
        "redis+sentinel://:pw@s1",
        "redis+sentinel://:pw@s1/main/x",
        "redis+cluster://:pw@h1:port",
        "http://:pw@h",
    ],
)
def test_a_url_it_cannot_use_is_refused_without_its_password(url: str) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"TIERSTREAM_REDIS_URL": url})
    assert "pw" not in str(err.value) and "***" in str(err.value)
