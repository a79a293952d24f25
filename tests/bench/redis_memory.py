"""What a deployment's state costs in Redis, per user, two ways:

- ``MEMORY USAGE`` of a sample of user keys (the key, its value and Redis's overhead for
  them; the sample is the first keys ``SCAN`` returns, hash-table order);
- the growth of ``INFO memory``'s ``used_memory`` over the run divided by the users:
  everything the run left, the per-partition timer sets, offsets and models included.
  Sound only while nothing else writes to that Redis (the bench stack's own server).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import orjson
import redis

from consumer.service.keys import KeySpace

#: User keys whose ``MEMORY USAGE`` is averaged.
SAMPLE = 1000
#: Room a user may need in Redis, for :func:`room_for` (today's JSON state with its
#: timer entry: about 2 KB).
ROOM_PER_USER = 4096


@dataclass(frozen=True)
class RedisUse:
    users: int
    sampled_bytes: float  #: mean MEMORY USAGE of a user key
    delta_bytes: float  #: used_memory growth per user


def used_memory(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.info("memory")["used_memory"])
    finally:
        client.close()


def measure(url: str, prefix: str, used_before: int) -> RedisUse:
    """Count the users under ``prefix`` and measure them (see the module docstring)."""
    client = redis.Redis.from_url(url)
    try:
        used_after = int(client.info("memory")["used_memory"])
        users = 0
        sizes: list[int] = []
        for key in client.scan_iter(match=f"{prefix}:*:u:*", count=5000):
            users += 1
            if len(sizes) < SAMPLE:
                sizes.append(int(client.memory_usage(key, samples=0) or 0))
    finally:
        client.close()
    if not users:
        raise RuntimeError(f"no user keys under {prefix}: did the service write its state?")
    return RedisUse(users, sum(sizes) / len(sizes), (used_after - used_before) / users)


def learnt(url: str, prefix: str) -> tuple[int, int]:
    """(samples, labels) the deployment under ``prefix`` learnt: those its stored model
    folded plus those of the contributions on that version (every contribution while no
    version is stored: they are all on the first), so instances that read one stream
    together are compared with one that read it alone."""
    keys = KeySpace(prefix)
    client = redis.Redis.from_url(url)
    try:
        raw = client.get(keys.model)
        model = orjson.loads(raw) if raw is not None else {}
        samples, labels = int(model.get("samples_seen", 0)), int(model.get("labels_seen", 0))
        for member in sorted(client.smembers(keys.contributors)):
            c = client.get(keys.contribution(member.decode()))
            if c is None:
                continue
            parsed = orjson.loads(c)
            if raw is None or parsed["base"] == model["name"]:
                samples += int(parsed["samples"])
                labels += int(parsed["labels"])
    finally:
        client.close()
    return samples, labels


def delete_prefix(url: str, prefix: str) -> None:
    """Delete every key of a bench deployment (DEL, not UNLINK: the memory is free when
    it returns, before the next run measures its baseline)."""
    client = redis.Redis.from_url(url)
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}:*", count=5000):
            batch.append(key)
            if len(batch) >= 5000:
                client.delete(*batch)
                batch.clear()
        if batch:
            client.delete(*batch)
    finally:
        client.close()


@contextlib.contextmanager
def room_for(url: str, users: int) -> Iterator[None]:
    """Raise Redis's ``maxmemory`` for the while if ``users`` may not fit: ops/redis's 1 GB
    (with ``noeviction``, writes beyond it are refused) holds about half a million users of
    today's state. The setting is put back afterwards."""
    client = redis.Redis.from_url(url)
    try:
        before = int(client.config_get("maxmemory")["maxmemory"])
        need = int(client.info("memory")["used_memory"]) + users * ROOM_PER_USER
        raise_it = 0 < before < need
        if raise_it:
            client.config_set("maxmemory", need)
        try:
            yield
        finally:
            if raise_it:
                client.config_set("maxmemory", before)
    finally:
        client.close()
