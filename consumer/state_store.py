"""Where user state, applied offsets and the outbox live: Redis, or memory (embedded mode).

A batch is one :class:`Transaction`: ``load`` reads the users' state and the partitions'
applied offsets in one round trip, ``save`` writes states, offsets and outbox entries
atomically. Redis fences with ``WATCH`` on the applied-offset keys: if another instance
saved one of the batch's partitions in between, ``save`` raises :class:`Fenced` and
writes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, cast

import redis
from redis.exceptions import RedisError, WatchError

from consumer.errors import Fenced, StateStoreError, StateStoreUnavailable
from consumer.keys import KeySpace

Partition = tuple[str, int]


class Transaction(Protocol):
    """One batch's read-then-write against the store."""

    def load(self, users: Sequence[str]) -> tuple[dict[str, bytes | None], dict[Partition, int]]:
        """States of ``users`` (None when new) and applied offsets (-1 when none)."""
        ...

    def save(
        self,
        states: Mapping[str, bytes],
        applied: Mapping[Partition, int],
        outbox: Mapping[Partition, Sequence[bytes]],
    ) -> None:
        """Write everything at once, or nothing (raises Fenced or StateStoreError)."""
        ...


class StateStore(Protocol):
    """The state backend interface (Redis or memory)."""

    def ping(self) -> None:
        """Raise StateStoreUnavailable when the store cannot be reached."""
        ...

    def begin(self, partitions: Sequence[Partition]) -> Transaction:
        """Start a batch over ``partitions``."""
        ...

    def outbox(self, partition: Partition) -> list[bytes]:
        """Entries saved for ``partition`` and not yet cleared."""
        ...

    def clear_outbox(self, partition: Partition, count: int) -> None:
        """Drop the first ``count`` entries (the ones just published)."""
        ...

    def get_user(self, user_id: str) -> bytes | None:
        """One user's stored state."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class RedisStateStore:
    """State in Redis; see :mod:`consumer.keys` for the key layout."""

    def __init__(self, url: str, *, prefix: str, ttl_seconds: int) -> None:
        self.url = url
        self.keys = KeySpace(prefix)
        self.ttl_seconds = ttl_seconds
        self._redis = redis.Redis.from_url(
            url, socket_timeout=30, socket_connect_timeout=5, health_check_interval=30
        )

    def ping(self) -> None:
        try:
            self._redis.ping()
        except RedisError as exc:
            raise StateStoreUnavailable(
                f"cannot reach Redis at {self.url} ({exc}); start it (make stack-up) "
                "or set TIERSTREAM_REDIS_URL"
            ) from None

    def begin(self, partitions: Sequence[Partition]) -> _RedisTransaction:
        return _RedisTransaction(self, partitions)

    def outbox(self, partition: Partition) -> list[bytes]:
        try:
            entries = cast(list[bytes], self._redis.lrange(self.keys.outbox(*partition), 0, -1))
        except RedisError as exc:
            raise StateStoreError(f"reading outbox {partition}: {exc}") from exc
        return entries

    def clear_outbox(self, partition: Partition, count: int) -> None:
        try:
            self._redis.ltrim(self.keys.outbox(*partition), count, -1)
        except RedisError as exc:
            raise StateStoreError(f"clearing outbox {partition}: {exc}") from exc

    def get_user(self, user_id: str) -> bytes | None:
        return cast(bytes | None, self._redis.get(self.keys.user(user_id)))

    def close(self) -> None:
        self._redis.close()


class _RedisTransaction:
    def __init__(self, store: RedisStateStore, partitions: Sequence[Partition]) -> None:
        self._store = store
        self._partitions = list(partitions)
        self._offset_keys = [store.keys.applied(*tp) for tp in self._partitions]
        self._pipe = store._redis.pipeline(transaction=True)

    def load(self, users: Sequence[str]) -> tuple[dict[str, bytes | None], dict[Partition, int]]:
        keys = self._store.keys
        try:
            cast(Any, self._pipe).watch(*self._offset_keys)
            values = cast(
                list[bytes | None],
                self._pipe.mget([keys.user(u) for u in users] + self._offset_keys),
            )
        except RedisError as exc:
            self._pipe.reset()
            raise StateStoreError(f"loading state: {exc}") from exc
        states = dict(zip(users, values[: len(users)], strict=True))
        applied = {
            tp: int(v) if v is not None else -1
            for tp, v in zip(self._partitions, values[len(users) :], strict=True)
        }
        return states, applied

    def save(
        self,
        states: Mapping[str, bytes],
        applied: Mapping[Partition, int],
        outbox: Mapping[Partition, Sequence[bytes]],
    ) -> None:
        keys, pipe, ttl = self._store.keys, self._pipe, self._store.ttl_seconds
        try:
            pipe.multi()
            for user, value in states.items():
                pipe.set(keys.user(user), value, ex=ttl)
            for tp, offset in applied.items():
                pipe.set(keys.applied(*tp), offset)
            for tp, entries in outbox.items():
                if entries:
                    pipe.rpush(keys.outbox(*tp), *entries)
            pipe.execute()
        except WatchError:
            raise Fenced(
                f"partitions {self._partitions} were written by another instance"
            ) from None
        except RedisError as exc:
            raise StateStoreError(f"saving state: {exc}") from exc
        finally:
            pipe.reset()


class MemoryStateStore:
    """State in this process's memory: the embedded mode and replays. Not shared, not
    durable; the same interface and semantics as Redis otherwise.

    >>> store = MemoryStateStore()
    >>> txn = store.begin([("t", 0)])
    >>> txn.load(["u1"])
    ({'u1': None}, {('t', 0): -1})
    >>> txn.save({"u1": b"{}"}, {("t", 0): 9}, {("t", 0): [b"x"]})
    >>> store.begin([("t", 0)]).load(["u1"]), store.outbox(("t", 0))
    (({'u1': b'{}'}, {('t', 0): 9}), [b'x'])
    """

    def __init__(self) -> None:
        self.users: dict[str, bytes] = {}
        self.applied: dict[Partition, int] = {}
        self.outboxes: dict[Partition, list[bytes]] = {}

    def ping(self) -> None:
        return None

    def begin(self, partitions: Sequence[Partition]) -> _MemoryTransaction:
        return _MemoryTransaction(self, partitions)

    def outbox(self, partition: Partition) -> list[bytes]:
        return list(self.outboxes.get(partition, ()))

    def clear_outbox(self, partition: Partition, count: int) -> None:
        del self.outboxes.get(partition, [])[:count]

    def get_user(self, user_id: str) -> bytes | None:
        return self.users.get(user_id)

    def close(self) -> None:
        return None


class _MemoryTransaction:
    def __init__(self, store: MemoryStateStore, partitions: Sequence[Partition]) -> None:
        self._store = store
        self._partitions = list(partitions)
        self._seen: dict[Partition, int] = {}

    def load(self, users: Sequence[str]) -> tuple[dict[str, bytes | None], dict[Partition, int]]:
        s = self._store
        self._seen = {tp: s.applied.get(tp, -1) for tp in self._partitions}
        return {u: s.users.get(u) for u in users}, dict(self._seen)

    def save(
        self,
        states: Mapping[str, bytes],
        applied: Mapping[Partition, int],
        outbox: Mapping[Partition, Sequence[bytes]],
    ) -> None:
        s = self._store
        if any(s.applied.get(tp, -1) != off for tp, off in self._seen.items()):
            raise Fenced(f"partitions {self._partitions} were written concurrently")
        s.users.update(states)
        s.applied.update(applied)
        for tp, entries in outbox.items():
            s.outboxes.setdefault(tp, []).extend(entries)
