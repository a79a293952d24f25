"""Opening the state store's Redis from one URL (``TIERSTREAM_REDIS_URL``): a single
server, Redis Cluster, or a primary watched by Sentinel. The store is the same on all
three (:mod:`consumer.service.redis_store`): every atomic write stays in one hash slot.

============================================================== =========================
URL                                                            Redis
============================================================== =========================
``redis://[[user]:password@]host:port[/db]``, ``rediss://...`` one server (TLS with
``unix:///path/redis.sock[?db=N]``                             ``rediss``), as redis-py
``redis+cluster://[[user]:password@]host:port[,host:port...]`` Redis Cluster: startup
``rediss+cluster://...``                                       nodes, any of them
``redis+sentinel://[[user]:password@]host:port[,host:port...]`` the primary Sentinel
``/<primary-name>[/db][?sentinel_password=...]``               names; failover followed
``rediss+sentinel://...``
============================================================== =========================

The password in the URL is the data nodes' (a Sentinel's own, if it has one, is
``sentinel_password``). A default port: 6379, 26379 for a Sentinel.

>>> a = parse_redis_url("redis+cluster://:pw@10.0.0.1:7000,10.0.0.2")
>>> a.kind, a.nodes, a.password, a.tls
('cluster', (('10.0.0.1', 7000), ('10.0.0.2', 6379)), 'pw', False)
>>> s = parse_redis_url("rediss+sentinel://app:s3cret@s1:26379,s2/mymaster/2")
>>> s.kind, s.nodes, s.primary, s.db, s.username, s.tls
('sentinel', (('s1', 26379), ('s2', 26379)), 'mymaster', 2, 'app', True)
>>> parse_redis_url("redis+sentinel://s1:26379")
Traceback (most recent call last):
...
ValueError: a Sentinel URL names the primary: redis+sentinel://host:port[,host:port...]/<name>[/db]

**Redis Cluster and transactions.** redis-py 8's cluster pipeline runs MULTI/EXEC with
WATCH when every key is in one slot, which the key layout guarantees per partition and
for the models. Its automatic retry is not safe there: after a connection error it
reconnects and sends the MULTI/EXEC again on the new connection, where the WATCH no
longer holds (and the first EXEC may have been applied). The cluster client is therefore
opened without retries: a failed command is the batch's failure, and the service reads
the batch again from the store's applied offsets, as after any Redis failure; a single
server's and Sentinel's pipelines already refuse to retry while WATCHing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, cast
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException, RedisError
from redis.retry import Retry
from redis.sentinel import Sentinel

__all__ = ["REDIS_FAILURES", "RedisAddress", "connect", "parse_redis_url"]

#: What a Redis call may raise when Redis fails (a cluster client's own errors, such as a
#: slot without a node during a failover, are not RedisErrors).
REDIS_FAILURES: Final = (RedisError, RedisClusterException)

_SINGLE: Final = ("redis", "rediss", "unix")
_KINDS: Final = {
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
}
#: Seconds: a command's answer, a connection's setup, a pooled connection's health check.
SOCKET_TIMEOUT_S: Final = 30
CONNECT_TIMEOUT_S: Final = 5
HEALTH_CHECK_S: Final = 30


@dataclass(frozen=True)
class RedisAddress:
    """Where the state store is, parsed from a URL."""

    url: str
    #: ``single``, ``cluster`` or ``sentinel``.
    kind: str
    nodes: tuple[tuple[str, int], ...] = ()
    #: The name Sentinel knows the primary by.
    primary: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None
    tls: bool = False


def parse_redis_url(url: str) -> RedisAddress:
    """The address ``url`` names; ValueError (never showing a password) if it names
    none."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in _SINGLE:
        return RedisAddress(url, "single")
    if scheme not in _KINDS:
        raise ValueError(
            "expected redis://host:port/db, rediss://..., unix://..., "
            "redis+cluster://host:port[,host:port...] or "
            "redis+sentinel://host:port[,host:port...]/<name>[/db]"
        )
    kind, tls = _KINDS[scheme]
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    nodes = tuple(_node(h, 26379 if kind == "sentinel" else 6379) for h in hosts.split(","))
    path = [p for p in parts.path.split("/") if p]
    query = parse_qs(parts.query)
    sentinel_password = query.get("sentinel_password", [None])[0]
    common: dict[str, Any] = {
        "username": unquote(user) or None,
        "password": unquote(password) if colon else None,
        "tls": tls,
    }
    if kind == "cluster":
        if path and path != ["0"]:
            raise ValueError("Redis Cluster has database 0 only: no /db after the nodes")
        return RedisAddress(url, kind, nodes, **common)
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError(
            "a Sentinel URL names the primary: "
            "redis+sentinel://host:port[,host:port...]/<name>[/db]"
        )
    db = int(path[1]) if len(path) == 2 else 0
    return RedisAddress(
        url, kind, nodes, unquote(path[0]), db, sentinel_password=sentinel_password, **common
    )


def _node(text: str, default_port: int) -> tuple[str, int]:
    """``host[:port]`` (``[v6]:port`` too)."""
    host, port = text, ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not host or (port and not port.isdigit()):
        raise ValueError(f"expected host:port, not {text!r}")
    return host, int(port) if port else default_port


def connect(address: RedisAddress) -> Any:
    """A client of the Redis ``address`` names (``redis.Redis`` or ``RedisCluster``: the
    same commands, pipelines and scripts). No network I/O until the first command."""
    timeouts: dict[str, Any] = {
        "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "health_check_interval": HEALTH_CHECK_S,
    }
    if address.kind == "single":
        return redis.Redis.from_url(address.url, **timeouts)
    auth: dict[str, Any] = {"username": address.username, "password": address.password}
    if address.tls:
        auth["ssl"] = True
    if address.kind == "cluster":
        return RedisCluster(
            startup_nodes=[cast(Any, ClusterNode)(h, p) for h, p in address.nodes],
            retry=Retry(NoBackoff(), 0),  # see the module docstring
            **auth,
            **timeouts,
        )
    sentinel_kwargs: dict[str, Any] = {
        "socket_timeout": CONNECT_TIMEOUT_S,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
    }
    if address.sentinel_password:
        sentinel_kwargs["password"] = address.sentinel_password
    if address.tls:
        sentinel_kwargs["ssl"] = True
    sentinel: Any = cast(Any, Sentinel)(list(address.nodes), sentinel_kwargs=sentinel_kwargs)
    return sentinel.master_for(
        address.primary, redis_class=_SentinelPrimary, db=address.db, **auth, **timeouts
    )


class _SentinelPrimary(redis.Redis):
    """The primary's client; closing it closes the connections to the Sentinels too."""

    def close(self) -> None:
        super().close()
        for sentinel in self.connection_pool.sentinel_manager.sentinels:  # type: ignore[attr-defined]
            sentinel.close()
