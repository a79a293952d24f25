"""Where user state, offsets, timers, the outbox and the models live: Redis, or memory
(embedded mode and replays).

A batch is one :class:`Transaction`: ``load`` reads everything the batch needs (users'
states, applied offsets, watermarks, the timers due within the batch and their users,
the global model and the other instances' contributions); ``save`` writes the batch's
:class:`SaveSet` atomically. Redis fences with ``WATCH`` on the partitions' applied-offset
keys and on the model key: if another instance saved one of these partitions, or a new
model version, in between, ``save`` raises :class:`~consumer.service.errors.Fenced` and writes
nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import redis
from redis.exceptions import RedisError, WatchError

from consumer.service.errors import Fenced, StateStoreError, StateStoreUnavailable
from consumer.service.keys import KeySpace

Partition = tuple[str, int]


@dataclass
class Loaded:
    """What a batch reads before it applies anything."""

    states: dict[str, bytes | None]
    applied: dict[Partition, int]
    watermarks: dict[Partition, int] = field(default_factory=dict)
    #: Per partition, the timers due at or before the batch's newest event: (due, user).
    timers: dict[Partition, list[tuple[int, str]]] = field(default_factory=dict)
    model: bytes | None = None
    #: Contributions by instance id (this instance's included).
    contributions: dict[str, bytes] = field(default_factory=dict)


@dataclass
class SaveSet:
    """What a batch writes, all at once."""

    #: States of users with an event in the batch: written with a fresh time-to-live.
    states: Mapping[str, bytes]
    applied: Mapping[Partition, int]
    outbox: Mapping[Partition, Sequence[bytes]]
    #: States changed by a timer alone: written only if the state still exists, keeping
    #: its time-to-live, so a silent user expires on time and is never recreated.
    quiet_states: Mapping[str, bytes] = field(default_factory=dict)
    watermarks: Mapping[Partition, int] = field(default_factory=dict)
    timers_set: Mapping[Partition, Mapping[str, int]] = field(default_factory=dict)
    timers_clear: Mapping[Partition, Sequence[str]] = field(default_factory=dict)
    model: bytes | None = None
    contribution: tuple[str, bytes] | None = None


class Transaction(Protocol):
    """One batch's read-then-write against the store."""

    def load(self, users: Sequence[str], timer_bounds: Mapping[Partition, int]) -> Loaded:
        """Everything the batch reads; timers due at or before ``timer_bounds[p]``."""
        ...

    def save(self, batch: SaveSet) -> None:
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

    def get_model(self) -> bytes | None:
        """The stored global model."""
        ...

    def get_contribution(self, instance: str) -> bytes | None:
        """One instance's stored contribution."""
        ...

    def put_model(self, model: bytes) -> None:
        """Replace the global model (``tierstream model import``)."""
        ...

    def watermark(self) -> int | None:
        """The newest event-time watermark over all partitions: "now" in event time, as
        of which ``inspect`` and ``snapshot`` report scores (None before any event)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class RedisStateStore:
    """State in Redis; see :mod:`consumer.service.keys` for the key layout."""

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
            return cast(list[bytes], self._redis.lrange(self.keys.outbox(*partition), 0, -1))
        except RedisError as exc:
            raise StateStoreError(f"reading outbox {partition}: {exc}") from exc

    def clear_outbox(self, partition: Partition, count: int) -> None:
        try:
            self._redis.ltrim(self.keys.outbox(*partition), count, -1)
        except RedisError as exc:
            raise StateStoreError(f"clearing outbox {partition}: {exc}") from exc

    def get_user(self, user_id: str) -> bytes | None:
        return cast(bytes | None, self._redis.get(self.keys.user(user_id)))

    def get_model(self) -> bytes | None:
        return cast(bytes | None, self._redis.get(self.keys.model))

    def get_contribution(self, instance: str) -> bytes | None:
        return cast(bytes | None, self._redis.get(self.keys.contribution(instance)))

    def put_model(self, model: bytes) -> None:
        self._redis.set(self.keys.model, model)

    def watermark(self) -> int | None:
        keys = list(self._redis.scan_iter(match=self.keys.all_watermarks, count=1000))
        values = cast(list[bytes | None], self._redis.mget(keys)) if keys else []
        marks = [int(v) for v in values if v is not None]
        return max(marks) if marks else None

    def close(self) -> None:
        self._redis.close()


class _RedisTransaction:
    def __init__(self, store: RedisStateStore, partitions: Sequence[Partition]) -> None:
        self._store = store
        self._partitions = list(partitions)
        self._pipe = store._redis.pipeline(transaction=True)

    def load(self, users: Sequence[str], timer_bounds: Mapping[Partition, int]) -> Loaded:
        keys, r = self._store.keys, self._store._redis
        parts = self._partitions
        try:
            # WATCH pins this connection; the reads go through one plain pipeline: a
            # change after the WATCH still makes EXEC fail.
            cast(Any, self._pipe).watch(*[keys.applied(*tp) for tp in parts], keys.model)
            reads = r.pipeline(transaction=False)
            reads.mget(
                [keys.user(u) for u in users]
                + [keys.applied(*tp) for tp in parts]
                + [keys.watermark(*tp) for tp in parts]
                + [keys.model]
            )
            bounded = [tp for tp in parts if tp in timer_bounds]
            for tp in bounded:
                reads.zrangebyscore(keys.timers(*tp), "-inf", timer_bounds[tp], withscores=True)
            reads.smembers(keys.contributors)
            first = reads.execute()
            values = cast(list[bytes | None], first[0])
            timers = {
                tp: [(int(score), member.decode()) for member, score in first[1 + i]]
                for i, tp in enumerate(bounded)
            }
            instances = sorted(m.decode() for m in cast(set[bytes], first[-1]))
            states = dict(zip(users, values[: len(users)], strict=True))
            extra = sorted({u for entries in timers.values() for _, u in entries} - set(states))
            second = cast(
                list[bytes | None],
                r.mget([keys.user(u) for u in extra] + [keys.contribution(i) for i in instances])
                if extra or instances
                else [],
            )
        except RedisError as exc:
            self._pipe.reset()
            raise StateStoreError(f"loading state: {exc}") from exc
        states.update(zip(extra, second[: len(extra)], strict=True))
        n, p = len(users), len(parts)
        contributions = {
            i: v for i, v in zip(instances, second[len(extra) :], strict=True) if v is not None
        }
        return Loaded(
            states=states,
            applied={tp: _int(v, -1) for tp, v in zip(parts, values[n : n + p], strict=True)},
            watermarks={
                tp: _int(v, -1) for tp, v in zip(parts, values[n + p : n + 2 * p], strict=True)
            },
            timers=timers,
            model=values[n + 2 * p],
            contributions=contributions,
        )

    def save(self, batch: SaveSet) -> None:
        pipe = self._pipe
        try:
            pipe.multi()
            self._queue(batch)
            pipe.execute()
        except WatchError:
            raise Fenced(
                f"partitions {self._partitions} or the model were written by another instance"
            ) from None
        except RedisError as exc:
            raise StateStoreError(f"saving state: {exc}") from exc
        finally:
            pipe.reset()

    def _queue(self, batch: SaveSet) -> None:
        keys, pipe, ttl = self._store.keys, self._pipe, self._store.ttl_seconds
        for user, value in batch.states.items():
            pipe.set(keys.user(user), value, ex=ttl)
        for user, value in batch.quiet_states.items():
            pipe.set(keys.user(user), value, xx=True, keepttl=True)
        for tp, offset in batch.applied.items():
            pipe.set(keys.applied(*tp), offset)
        for tp, wm in batch.watermarks.items():
            pipe.set(keys.watermark(*tp), wm)
        for tp, entries in batch.outbox.items():
            if entries:
                pipe.rpush(keys.outbox(*tp), *entries)
        for tp, due in batch.timers_set.items():
            if due:
                pipe.zadd(keys.timers(*tp), dict(due))
        for tp, gone in batch.timers_clear.items():
            if gone:
                pipe.zrem(keys.timers(*tp), *gone)
        if batch.model is not None:
            pipe.set(keys.model, batch.model)
        if batch.contribution is not None:
            instance, value = batch.contribution
            pipe.set(keys.contribution(instance), value)
            pipe.sadd(keys.contributors, instance)


def _int(value: bytes | None, default: int) -> int:
    return int(value) if value is not None else default


class MemoryStateStore:
    """State in this process's memory: the embedded mode and replays. Not shared, not
    durable; the same interface and semantics as Redis otherwise.

    >>> store = MemoryStateStore()
    >>> txn = store.begin([("t", 0)])
    >>> txn.load(["u1"], {}).states
    {'u1': None}
    >>> txn.save(SaveSet({"u1": b"{}"}, {("t", 0): 9}, {("t", 0): [b"x"]},
    ...                  timers_set={("t", 0): {"u1": 50}}))
    >>> loaded = store.begin([("t", 0)]).load(["u1"], {("t", 0): 60})
    >>> loaded.states, loaded.applied, loaded.timers, store.outbox(("t", 0))
    ({'u1': b'{}'}, {('t', 0): 9}, {('t', 0): [(50, 'u1')]}, [b'x'])
    """

    def __init__(self) -> None:
        self.users: dict[str, bytes] = {}
        self.applied: dict[Partition, int] = {}
        self.watermarks: dict[Partition, int] = {}
        self.outboxes: dict[Partition, list[bytes]] = {}
        self.timers: dict[Partition, dict[str, int]] = {}
        self.model: bytes | None = None
        self.contributions: dict[str, bytes] = {}

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

    def get_model(self) -> bytes | None:
        return self.model

    def get_contribution(self, instance: str) -> bytes | None:
        return self.contributions.get(instance)

    def put_model(self, model: bytes) -> None:
        self.model = model

    def watermark(self) -> int | None:
        return max(self.watermarks.values(), default=None)

    def close(self) -> None:
        return None


class _MemoryTransaction:
    def __init__(self, store: MemoryStateStore, partitions: Sequence[Partition]) -> None:
        self._store = store
        self._partitions = list(partitions)
        self._seen: dict[Partition, int] = {}
        self._model: bytes | None = None

    def load(self, users: Sequence[str], timer_bounds: Mapping[Partition, int]) -> Loaded:
        s = self._store
        self._seen = {tp: s.applied.get(tp, -1) for tp in self._partitions}
        self._model = s.model
        timers = {
            tp: sorted((due, u) for u, due in s.timers.get(tp, {}).items() if due <= bound)
            for tp, bound in timer_bounds.items()
        }
        wanted = list(users) + sorted({u for t in timers.values() for _, u in t} - set(users))
        return Loaded(
            states={u: s.users.get(u) for u in wanted},
            applied=dict(self._seen),
            watermarks={tp: s.watermarks.get(tp, -1) for tp in self._partitions},
            timers=timers,
            model=s.model,
            contributions=dict(s.contributions),
        )

    def save(self, batch: SaveSet) -> None:
        s = self._store
        if s.model != self._model or any(
            s.applied.get(tp, -1) != off for tp, off in self._seen.items()
        ):
            raise Fenced(f"partitions {self._partitions} were written concurrently")
        s.users.update(batch.states)
        for user, value in batch.quiet_states.items():
            if user in s.users:
                s.users[user] = value
        s.applied.update(batch.applied)
        s.watermarks.update(batch.watermarks)
        for tp, entries in batch.outbox.items():
            s.outboxes.setdefault(tp, []).extend(entries)
        for tp, due in batch.timers_set.items():
            s.timers.setdefault(tp, {}).update(due)
        for tp, gone in batch.timers_clear.items():
            for user in gone:
                s.timers.get(tp, {}).pop(user, None)
        if batch.model is not None:
            s.model = batch.model
        if batch.contribution is not None:
            s.contributions[batch.contribution[0]] = batch.contribution[1]
