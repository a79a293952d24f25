"""Where user state, offsets, timers, the outbox and the models live: Redis, or memory
(embedded mode and replays).

**Ownership.** An instance :meth:`~StateStore.acquire` s a partition when the group gives
it: the partition's owner epoch goes up by one (``INCR``) and the instance remembers the
value. Every save and every outbox trim checks that the stored epoch is still the one it
holds; an instance that stalled while the partition moved on (a zombie) finds a higher
epoch and is fenced (:class:`~consumer.service.errors.Fenced`) instead of writing over the
new owner's work. A lower epoch than the one held means the store went back in time (a
restore, a failover to a lagging replica): also fenced, and the owner acquires again.

**A batch** is one :class:`Transaction`: ``load`` reads everything the batch needs (users'
states, applied offsets, watermarks, the timers due within the batch and their users, the
global model and the other instances' contributions); ``save`` writes the batch's
:class:`SaveSet` atomically. Redis fences with ``WATCH`` on the partitions' epochs and
applied offsets, on the model, and on every user the batch reads: if anything of it was
written by someone else in between, ``save`` raises Fenced and writes nothing.

**Timers are loaded in bounded slices**: at most ``max_timers`` per partition and batch
(plus every timer due at the same millisecond as the last one). When a slice is full,
:attr:`Loaded.capped` says up to which event time the loaded timers are complete, and the
batch stops there (:mod:`consumer.service.batch`): one batch never loads every user of a
partition.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, cast

import redis
from redis.exceptions import RedisError, WatchError

from consumer.service.errors import Fenced, StateStoreError, StateStoreUnavailable
from consumer.service.keys import KeySpace
from consumer.service.settings import mask_url

Partition = tuple[str, int]
#: Timers loaded per partition and batch, by default.
MAX_TIMERS: Final = 10_000

#: Trim the first ARGV[2] entries of an outbox (KEYS[2]) only if the partition's epoch
#: (KEYS[1]) is still ARGV[1]; 1 if trimmed, 0 if the partition has another owner.
_GUARDED_TRIM: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('LTRIM', KEYS[2], tonumber(ARGV[2]), -1)
  return 1
end
return 0
"""


@dataclass
class Loaded:
    """What a batch reads before it applies anything."""

    states: dict[str, bytes | None]
    applied: dict[Partition, int]
    watermarks: dict[Partition, int] = field(default_factory=dict)
    #: Per partition, the timers due at or before the batch's newest event: (due, user).
    timers: dict[Partition, list[tuple[int, str]]] = field(default_factory=dict)
    #: Partitions whose timer slice was full: every timer due at or before this time is
    #: loaded, later ones may not be. The batch stops before an event later than it.
    capped: dict[Partition, int] = field(default_factory=dict)
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
    #: Contributions folded into the new ``model`` (or based on an older version): gone.
    drop_contributions: Sequence[str] = ()
    #: Users forgotten (``tierstream forget``): their state is deleted.
    deleted_users: Sequence[str] = ()


class Transaction(Protocol):
    """One batch's read-then-write against the store."""

    def load(self, users: Sequence[str], timer_bounds: Mapping[Partition, int]) -> Loaded:
        """Everything the batch reads; timers due at or before ``timer_bounds[p]``.
        Raises Fenced if this instance does not hold every partition of the batch."""
        ...

    def save(self, batch: SaveSet) -> None:
        """Write everything at once, or nothing (raises Fenced or StateStoreError)."""
        ...


class StateStore(Protocol):
    """The state backend interface (Redis or memory)."""

    def ping(self) -> None:
        """Raise StateStoreUnavailable when the store cannot be reached."""
        ...

    def acquire(self, partitions: Sequence[Partition]) -> dict[Partition, int]:
        """Become the owner of ``partitions``: raise their epochs and hold the new ones."""
        ...

    def release(self, partitions: Sequence[Partition]) -> None:
        """Stop holding ``partitions`` (they were revoked)."""
        ...

    def held(self) -> dict[Partition, int]:
        """The partitions this instance holds, with their epochs."""
        ...

    def epochs(self, partitions: Sequence[Partition]) -> dict[Partition, int]:
        """The stored epochs of ``partitions`` (0: never acquired)."""
        ...

    def check_owner(self, partitions: Sequence[Partition]) -> None:
        """Raise Fenced unless this instance still holds the stored epoch of each."""
        ...

    def applied_offsets(self, partitions: Sequence[Partition]) -> dict[Partition, int | None]:
        """The last applied input offset of each partition (None: nothing applied)."""
        ...

    def begin(self, partitions: Sequence[Partition]) -> Transaction:
        """Start a batch over ``partitions``."""
        ...

    def outbox(self, partition: Partition) -> list[bytes]:
        """Entries saved for ``partition`` and not yet cleared."""
        ...

    def clear_outbox(self, partition: Partition, count: int) -> None:
        """Drop the first ``count`` entries (the ones just published); Fenced if the
        partition's epoch is no longer the one held."""
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


def _fenced(partitions: Sequence[Partition], held: Mapping[Partition, int], stored: Any) -> Fenced:
    return Fenced(
        f"partitions {sorted(partitions)}: this instance holds epochs "
        f"{[held.get(tp) for tp in partitions]}, the store has {stored}"
    )


class RedisStateStore:
    """State in Redis; see :mod:`consumer.service.keys` for the key layout."""

    def __init__(
        self, url: str, *, prefix: str, ttl_seconds: int, max_timers: int = MAX_TIMERS
    ) -> None:
        self.url = url
        self.keys = KeySpace(prefix)
        self.ttl_seconds = ttl_seconds
        self.max_timers = max_timers
        self._held: dict[Partition, int] = {}
        self._redis = redis.Redis.from_url(
            url, socket_timeout=30, socket_connect_timeout=5, health_check_interval=30
        )
        self._trim = self._redis.register_script(_GUARDED_TRIM)

    def ping(self) -> None:
        try:
            self._redis.ping()
        except RedisError as exc:
            safe = str(exc).replace(self.url, mask_url(self.url))
            raise StateStoreUnavailable(
                f"cannot reach Redis at {mask_url(self.url)} ({safe}); start it (make "
                "stack-up) or set TIERSTREAM_REDIS_URL"
            ) from None

    def acquire(self, partitions: Sequence[Partition]) -> dict[Partition, int]:
        try:
            pipe = self._redis.pipeline(transaction=False)
            for tp in partitions:
                pipe.incr(self.keys.epoch(*tp))
            values = pipe.execute()
        except RedisError as exc:
            raise StateStoreError(f"acquiring partitions {sorted(partitions)}: {exc}") from exc
        got = {tp: int(v) for tp, v in zip(partitions, values, strict=True)}
        self._held.update(got)
        return got

    def release(self, partitions: Sequence[Partition]) -> None:
        for tp in partitions:
            self._held.pop(tp, None)

    def held(self) -> dict[Partition, int]:
        return dict(self._held)

    def epochs(self, partitions: Sequence[Partition]) -> dict[Partition, int]:
        try:
            values = cast(
                list[bytes | None], self._redis.mget([self.keys.epoch(*tp) for tp in partitions])
            )
        except RedisError as exc:
            raise StateStoreError(f"reading epochs: {exc}") from exc
        return {tp: _int(v, 0) for tp, v in zip(partitions, values, strict=True)}

    def check_owner(self, partitions: Sequence[Partition]) -> None:
        stored = self.epochs(partitions)
        if any(stored[tp] != self._held.get(tp) for tp in partitions):
            raise _fenced(partitions, self._held, [stored[tp] for tp in partitions])

    def applied_offsets(self, partitions: Sequence[Partition]) -> dict[Partition, int | None]:
        try:
            values = self._redis.mget([self.keys.applied(*tp) for tp in partitions])
        except RedisError as exc:
            raise StateStoreError(f"reading applied offsets: {exc}") from exc
        return {tp: None if v is None else int(v) for tp, v in zip(partitions, values, strict=True)}

    def begin(self, partitions: Sequence[Partition]) -> _RedisTransaction:
        return _RedisTransaction(self, partitions)

    def outbox(self, partition: Partition) -> list[bytes]:
        try:
            return cast(list[bytes], self._redis.lrange(self.keys.outbox(*partition), 0, -1))
        except RedisError as exc:
            raise StateStoreError(f"reading outbox {partition}: {exc}") from exc

    def clear_outbox(self, partition: Partition, count: int) -> None:
        epoch = self._held.get(partition)
        if epoch is None:
            raise _fenced([partition], self._held, "(not acquired)")
        keys = [self.keys.epoch(*partition), self.keys.outbox(*partition)]
        try:
            trimmed = self._trim(keys=keys, args=[epoch, count])
        except RedisError as exc:
            raise StateStoreError(f"clearing outbox {partition}: {exc}") from exc
        if not trimmed:
            raise _fenced([partition], self._held, "another epoch")

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
        store, keys, r = self._store, self._store.keys, self._store._redis
        parts = self._partitions
        held = store._held
        if any(tp not in held for tp in parts):
            raise _fenced(parts, held, "(not acquired)")
        try:
            # WATCH pins this connection; the reads go through one plain pipeline: a
            # change after the WATCH still makes EXEC fail.
            cast(Any, self._pipe).watch(
                *[keys.epoch(*tp) for tp in parts],
                *[keys.applied(*tp) for tp in parts],
                keys.model,
                *[keys.user(u) for u in users],
            )
            reads = r.pipeline(transaction=False)
            reads.mget(
                [keys.user(u) for u in users]
                + [keys.applied(*tp) for tp in parts]
                + [keys.watermark(*tp) for tp in parts]
                + [keys.epoch(*tp) for tp in parts]
                + [keys.model]
            )
            bounded = [tp for tp in parts if tp in timer_bounds]
            for tp in bounded:
                reads.zrangebyscore(
                    keys.timers(*tp),
                    "-inf",
                    timer_bounds[tp],
                    start=0,
                    num=store.max_timers,
                    withscores=True,
                )
            reads.smembers(keys.contributors)
            first = reads.execute()
            values = cast(list[bytes | None], first[0])
            n, p = len(users), len(parts)
            stored_epochs = [_int(v, 0) for v in values[n + 2 * p : n + 3 * p]]
            if any(e != held[tp] for tp, e in zip(parts, stored_epochs, strict=True)):
                raise _fenced(parts, held, stored_epochs)
            timers, capped = self._slices(bounded, first[1 : 1 + len(bounded)])
            instances = sorted(m.decode() for m in cast(set[bytes], first[-1]))
            states = dict(zip(users, values[:n], strict=True))
            extra = sorted({u for entries in timers.values() for _, u in entries} - set(states))
            if extra:
                cast(Any, self._pipe).watch(*[keys.user(u) for u in extra])
            second = cast(
                list[bytes | None],
                r.mget([keys.user(u) for u in extra] + [keys.contribution(i) for i in instances])
                if extra or instances
                else [],
            )
        except RedisError as exc:
            self._pipe.reset()
            raise StateStoreError(f"loading state: {exc}") from exc
        except Fenced:
            self._pipe.reset()
            raise
        states.update(zip(extra, second[: len(extra)], strict=True))
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
            capped=capped,
            model=values[n + 3 * p],
            contributions=contributions,
        )

    def _slices(
        self, bounded: Sequence[Partition], results: Sequence[Any]
    ) -> tuple[dict[Partition, list[tuple[int, str]]], dict[Partition, int]]:
        """Timer slices as loaded, completed with the ties of a full slice's last time."""
        keys, r, limit = self._store.keys, self._store._redis, self._store.max_timers
        timers: dict[Partition, list[tuple[int, str]]] = {}
        capped: dict[Partition, int] = {}
        for tp, rows in zip(bounded, results, strict=True):
            entries = [(int(score), member.decode()) for member, score in rows]
            if len(entries) >= limit:
                last = entries[-1][0]
                ties = cast(
                    list[tuple[bytes, float]],
                    r.zrangebyscore(keys.timers(*tp), last, last, withscores=True),
                )
                seen = {u for _, u in entries}
                entries += [(last, m.decode()) for m, _ in ties if m.decode() not in seen]
                capped[tp] = last
            timers[tp] = entries
        return timers, capped

    def save(self, batch: SaveSet) -> None:
        pipe = self._pipe
        try:
            pipe.multi()
            self._queue(batch)
            pipe.execute()
        except WatchError:
            raise Fenced(
                f"partitions {self._partitions}, the model or a user of the batch were "
                "written by another instance"
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
        if batch.deleted_users:
            pipe.delete(*[keys.user(u) for u in batch.deleted_users])
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
        self._queue_models(batch)

    def _queue_models(self, batch: SaveSet) -> None:
        keys, pipe = self._store.keys, self._pipe
        if batch.model is not None:
            pipe.set(keys.model, batch.model)
        if batch.drop_contributions:
            pipe.delete(*[keys.contribution(i) for i in batch.drop_contributions])
            pipe.srem(keys.contributors, *batch.drop_contributions)
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
    >>> store.acquire([("t", 0)])
    {('t', 0): 1}
    >>> txn = store.begin([("t", 0)])
    >>> txn.load(["u1"], {}).states
    {'u1': None}
    >>> txn.save(SaveSet({"u1": b"{}"}, {("t", 0): 9}, {("t", 0): [b"x"]},
    ...                  timers_set={("t", 0): {"u1": 50}}))
    >>> loaded = store.begin([("t", 0)]).load(["u1"], {("t", 0): 60})
    >>> loaded.states, loaded.applied, loaded.timers, store.outbox(("t", 0))
    ({'u1': b'{}'}, {('t', 0): 9}, {('t', 0): [(50, 'u1')]}, [b'x'])
    """

    def __init__(self, *, max_timers: int = MAX_TIMERS) -> None:
        self.users: dict[str, bytes] = {}
        self.applied: dict[Partition, int] = {}
        self.watermarks: dict[Partition, int] = {}
        self.outboxes: dict[Partition, list[bytes]] = {}
        self.timers: dict[Partition, dict[str, int]] = {}
        self.epoch: dict[Partition, int] = {}
        self.model: bytes | None = None
        self.contributions: dict[str, bytes] = {}
        self.max_timers = max_timers
        self._held: dict[Partition, int] = {}

    def ping(self) -> None:
        return None

    def acquire(self, partitions: Sequence[Partition]) -> dict[Partition, int]:
        got = {}
        for tp in partitions:
            self.epoch[tp] = got[tp] = self.epoch.get(tp, 0) + 1
        self._held.update(got)
        return got

    def release(self, partitions: Sequence[Partition]) -> None:
        for tp in partitions:
            self._held.pop(tp, None)

    def held(self) -> dict[Partition, int]:
        return dict(self._held)

    def epochs(self, partitions: Sequence[Partition]) -> dict[Partition, int]:
        return {tp: self.epoch.get(tp, 0) for tp in partitions}

    def check_owner(self, partitions: Sequence[Partition]) -> None:
        if any(self.epoch.get(tp, 0) != self._held.get(tp) for tp in partitions):
            raise _fenced(partitions, self._held, [self.epoch.get(tp, 0) for tp in partitions])

    def applied_offsets(self, partitions: Sequence[Partition]) -> dict[Partition, int | None]:
        return {tp: self.applied.get(tp) for tp in partitions}

    def begin(self, partitions: Sequence[Partition]) -> _MemoryTransaction:
        return _MemoryTransaction(self, partitions)

    def outbox(self, partition: Partition) -> list[bytes]:
        return list(self.outboxes.get(partition, ()))

    def clear_outbox(self, partition: Partition, count: int) -> None:
        self.check_owner([partition])
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
        s.check_owner(self._partitions)
        self._seen = {tp: s.applied.get(tp, -1) for tp in self._partitions}
        self._model = s.model
        timers: dict[Partition, list[tuple[int, str]]] = {}
        capped: dict[Partition, int] = {}
        for tp, bound in timer_bounds.items():
            due = sorted((d, u) for u, d in s.timers.get(tp, {}).items() if d <= bound)
            if len(due) > s.max_timers:
                last = due[s.max_timers - 1][0]
                due = [e for e in due if e[0] <= last]
                capped[tp] = last
            timers[tp] = due
        wanted = list(users) + sorted({u for t in timers.values() for _, u in t} - set(users))
        return Loaded(
            states={u: s.users.get(u) for u in wanted},
            applied=dict(self._seen),
            watermarks={tp: s.watermarks.get(tp, -1) for tp in self._partitions},
            timers=timers,
            capped=capped,
            model=s.model,
            contributions=dict(s.contributions),
        )

    def save(self, batch: SaveSet) -> None:
        s = self._store
        s.check_owner(self._partitions)
        if s.model != self._model or any(
            s.applied.get(tp, -1) != off for tp, off in self._seen.items()
        ):
            raise Fenced(f"partitions {self._partitions} were written concurrently")
        s.users.update(batch.states)
        for user, value in batch.quiet_states.items():
            if user in s.users:
                s.users[user] = value
        for user in batch.deleted_users:
            s.users.pop(user, None)
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
        for instance in batch.drop_contributions:
            s.contributions.pop(instance, None)
        if batch.contribution is not None:
            s.contributions[batch.contribution[0]] = batch.contribution[1]
