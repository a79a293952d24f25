"""The state store in Redis: a single server, Redis Cluster or Sentinel, the same code
(:mod:`consumer.service.redis_connection` opens each; :mod:`consumer.service.state_store`
says what a store does, :mod:`consumer.service.keys` where each thing lives, every
atomic write in one hash slot).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, cast

from redis.exceptions import WatchError

from consumer.service.errors import Fenced, SettingsError, StateStoreError, StateStoreUnavailable
from consumer.service.keys import KeySpace
from consumer.service.partitioning import partition_of
from consumer.service.redis_connection import REDIS_FAILURES, connect, parse_redis_url
from consumer.service.settings import mask_url
from consumer.service.state_store import (
    MAX_TIMERS,
    Holdings,
    Loaded,
    Partition,
    PartitionWrite,
    SaveSet,
    fenced,
    timer_slice,
)
from consumer.service.tier_counts import TierCounts

#: Trim the first ARGV[2] entries of an outbox (KEYS[2]) only if the partition's epoch
#: (KEYS[1]) is still ARGV[1]; 1 if trimmed, 0 if the partition has another owner.
_GUARDED_TRIM: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('LTRIM', KEYS[2], tonumber(ARGV[2]), -1)
  return 1
end
return 0
"""
#: Record a topic's partition count (KEYS[1] hash, ARGV[1] topic, ARGV[2] count) unless
#: one is recorded; the first record marks the topic's populations counted (KEYS[2] set):
#: its state starts empty. The recorded count.
_RECORD_COUNT: Final = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('SADD', KEYS[2], ARGV[1])
end
return redis.call('HGET', KEYS[1], ARGV[1])
"""


class RedisStateStore(Holdings):
    """State in Redis; see :mod:`consumer.service.keys` for the key layout.

    ``topic`` is the deployment's input topic: :meth:`get_user` looks there first.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        max_timers: int = MAX_TIMERS,
        topic: str | None = None,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.keys = KeySpace(prefix)
        self.max_timers = max_timers
        self.topic = topic
        super().__init__()
        try:
            self.address = parse_redis_url(url)
        except ValueError as exc:
            raise SettingsError(f"{mask_url(url)}: {exc}") from None
        self._client: Any = None
        self._trim: Any = None
        self._record_count: Any = None
        #: Transactions whose WATCHes hold connections: released on close.
        self._open: set[_RedisTransaction] = set()

    @property
    def _redis(self) -> Any:
        """The client, opened at first use (a Redis Cluster client asks for the cluster's
        layout when it is made)."""
        if self._client is None:
            try:
                self._client = connect(self.address)
            except REDIS_FAILURES as exc:
                raise self.unreachable(exc) from None
            self._trim = self._client.register_script(_GUARDED_TRIM)
            self._record_count = self._client.register_script(_RECORD_COUNT)
        return self._client

    def unreachable(self, exc: Exception) -> StateStoreUnavailable:
        """The one-line error of a Redis that does not answer, its password masked."""
        safe = str(exc).replace(self.url, mask_url(self.url))
        return StateStoreUnavailable(
            f"cannot reach Redis at {mask_url(self.url)} ({safe}); start it (make "
            "stack-up) or set TIERSTREAM_REDIS_URL"
        )

    def ping(self) -> None:
        try:
            self._redis.ping()
        except REDIS_FAILURES as exc:
            raise self.unreachable(exc) from None

    @property
    def client(self) -> Any:
        """The Redis client (for tools that scan keys)."""
        return self._redis

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values of ``keys``, in any slots, in one round trip."""
        if not keys:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.get(key)
        return cast(list[bytes | None], pipe.execute())

    def acquire(self, partitions: Sequence[Partition]) -> dict[Partition, int]:
        try:
            pipe = self._redis.pipeline(transaction=False)
            for tp in partitions:
                pipe.incr(self.keys.epoch(*tp))
            values = pipe.execute()
        except REDIS_FAILURES as exc:
            raise StateStoreError(f"acquiring partitions {sorted(partitions)}: {exc}") from exc
        got = {tp: int(v) for tp, v in zip(partitions, values, strict=True)}
        self._held.update(got)
        return got

    def epochs(self, partitions: Sequence[Partition]) -> dict[Partition, int]:
        try:
            values = self.get_many([self.keys.epoch(*tp) for tp in partitions])
        except REDIS_FAILURES as exc:
            raise StateStoreError(f"reading epochs: {exc}") from exc
        return {tp: _int(v, 0) for tp, v in zip(partitions, values, strict=True)}

    def check_owner(self, partitions: Sequence[Partition]) -> None:
        stored = self.epochs(partitions)
        if any(stored[tp] != self._held.get(tp) for tp in partitions):
            raise fenced(partitions, self._held, [stored[tp] for tp in partitions])

    def applied_offsets(self, partitions: Sequence[Partition]) -> dict[Partition, int | None]:
        try:
            values = self.get_many([self.keys.applied(*tp) for tp in partitions])
        except REDIS_FAILURES as exc:
            raise StateStoreError(f"reading applied offsets: {exc}") from exc
        return {tp: None if v is None else int(v) for tp, v in zip(partitions, values, strict=True)}

    def begin(self, partitions: Sequence[Partition]) -> _RedisTransaction:
        return _RedisTransaction(self, partitions)

    def outbox(self, partition: Partition) -> list[bytes]:
        try:
            return cast(list[bytes], self._redis.lrange(self.keys.outbox(*partition), 0, -1))
        except REDIS_FAILURES as exc:
            raise StateStoreError(f"reading outbox {partition}: {exc}") from exc

    def clear_outbox(self, partition: Partition, count: int) -> None:
        epoch = self._held.get(partition)
        if epoch is None:
            raise fenced([partition], self._held, "(not acquired)")
        keys = [self.keys.epoch(*partition), self.keys.outbox(*partition)]
        try:
            self._redis  # noqa: B018  (opens the client and its script)
            trimmed = self._trim(keys=keys, args=[epoch, count])
        except REDIS_FAILURES as exc:
            raise StateStoreError(f"clearing outbox {partition}: {exc}") from exc
        if not trimmed:
            raise fenced([partition], self._held, "another epoch")

    def record_partition_count(self, topic: str, partitions: int) -> int:
        keys = [self.keys.partitions, self.keys.counted]
        try:
            self._redis  # noqa: B018  (opens the client and its script)
            recorded = self._record_count(keys=keys, args=[topic, partitions])
        except REDIS_FAILURES as exc:
            raise StateStoreError(f"recording the partition count of {topic}: {exc}") from exc
        return int(recorded)

    def partition_counts(self) -> dict[str, int]:
        raw = cast(dict[bytes, bytes], self._redis.hgetall(self.keys.partitions))
        return {k.decode(): int(v) for k, v in raw.items()}

    def populations_counted(self, topic: str) -> bool:
        try:
            return bool(self._redis.sismember(self.keys.counted, topic))
        except REDIS_FAILURES as exc:
            raise StateStoreError(f"reading whether {topic} is counted: {exc}") from exc

    def tier_counts(self, partitions: Sequence[Partition]) -> dict[Partition, TierCounts]:
        if not partitions:
            return {}
        try:
            pipe = self._redis.pipeline(transaction=False)
            for tp in partitions:
                pipe.hgetall(self.keys.populations(*tp))
                pipe.hgetall(self.keys.conversions(*tp))
            values = pipe.execute()
        except REDIS_FAILURES as exc:
            raise StateStoreError(f"reading tier counts: {exc}") from exc
        return {
            tp: TierCounts(_counts(values[2 * i]), _counts(values[2 * i + 1]))
            for i, tp in enumerate(partitions)
        }

    def get_user(self, user_id: str) -> bytes | None:
        return self.get_users([user_id])[user_id]

    def get_users(self, user_ids: Sequence[str]) -> dict[str, bytes | None]:
        """The stored states of ``user_ids``, in one round trip. A user is looked for in
        their partition of each topic with state (by the recorded partition counts), the
        store's ``topic`` first."""
        counts = self.partition_counts()
        topics = sorted(counts, key=lambda t: (t != self.topic, t))
        keys = [self.keys.user(t, partition_of(u, counts[t]), u) for u in user_ids for t in topics]
        values = iter(self.get_many(keys))
        found: dict[str, bytes | None] = {}
        for user in user_ids:
            mine = [next(values) for _ in topics]
            found[user] = next((v for v in mine if v is not None), None)
        return found

    def get_model(self) -> bytes | None:
        return cast(bytes | None, self._redis.get(self.keys.model))

    def get_contribution(self, instance: str) -> bytes | None:
        return cast(bytes | None, self._redis.get(self.keys.contribution(instance)))

    def put_model(self, model: bytes) -> None:
        self._redis.set(self.keys.model, model)

    def watermark(self) -> int | None:
        counts = self.partition_counts()
        keys = [self.keys.watermark(t, p) for t, n in sorted(counts.items()) for p in range(n)]
        marks = [int(v) for v in self.get_many(keys) if v is not None]
        return max(marks) if marks else None

    def close(self) -> None:
        for txn in list(self._open):
            txn.abort()
        if self._client is not None:
            self._client.close()


class _RedisTransaction:
    """One batch: a WATCHed transaction per partition (its slot), one for the models.

    WATCH pins a connection per pipeline until the write or :meth:`_reset`; the reads go
    through plain pipelines, one round trip for every slot: a change after the WATCH
    still makes that slot's EXEC fail.
    """

    def __init__(self, store: RedisStateStore, partitions: Sequence[Partition]) -> None:
        self._store = store
        self._partitions = list(partitions)
        self._pipes: dict[Partition, Any] = {}
        self._models: Any = None

    def load(
        self, users: Mapping[Partition, Sequence[str]], timer_bounds: Mapping[Partition, int]
    ) -> Loaded:
        parts, held = self._partitions, self._store._held
        if any(tp not in held for tp in parts):
            raise fenced(parts, held, "(not acquired)")
        try:
            return self._load(users, timer_bounds)
        except REDIS_FAILURES as exc:
            self._reset()
            raise StateStoreError(f"loading state: {exc}") from exc
        except Fenced:
            self._reset()
            raise

    def _load(
        self, users: Mapping[Partition, Sequence[str]], timer_bounds: Mapping[Partition, int]
    ) -> Loaded:
        store, keys, r = self._store, self._store.keys, self._store._redis
        parts = self._partitions
        self._store._open.add(self)
        for tp in parts:
            # The partition's epoch and applied offset, not its users one by one: every
            # writer of a partition's users holds its epoch (a new owner raises it), and
            # WATCH costs Redis time quadratic in the keys one connection watches
            # (7.0 looks each new key up in a list of those already watched: 2,000 keys
            # took 25 ms, 4,000 took 94 ms; docs/performance.md, "Per-batch costs").
            pipe = self._pipes[tp] = cast(Any, r.pipeline(transaction=True))
            pipe.watch(keys.epoch(*tp), keys.applied(*tp))
        self._models = r.pipeline(transaction=True)
        self._models.watch(keys.model)
        reads = r.pipeline(transaction=False)
        for tp in parts:
            mine = [keys.user(*tp, u) for u in users.get(tp, ())]
            _mget(reads, [*mine, keys.applied(*tp), keys.watermark(*tp), keys.epoch(*tp)])
        for tp in parts:
            reads.hgetall(keys.populations(*tp))
        bounded = [tp for tp in parts if tp in timer_bounds]
        for tp in bounded:
            reads.zrangebyscore(
                keys.timers(*tp),
                "-inf",
                timer_bounds[tp],
                start=0,
                num=timer_slice(store.max_timers, len(bounded)),
                withscores=True,
            )
        reads.get(keys.model)
        reads.smembers(keys.contributors)
        first = reads.execute()
        loaded = Loaded(states={}, applied={}, model=first[-2])
        stored_epochs = []
        for tp, values in zip(parts, first[: len(parts)], strict=True):
            mine = list(users.get(tp, ()))
            loaded.states[tp] = dict(zip(mine, values[: len(mine)], strict=True))
            applied, wm, epoch = values[len(mine) :]
            loaded.applied[tp] = _int(applied, -1)
            loaded.watermarks[tp] = _int(wm, -1)
            stored_epochs.append(_int(epoch, 0))
        if any(e != store._held[tp] for tp, e in zip(parts, stored_epochs, strict=True)):
            raise fenced(parts, store._held, stored_epochs)
        n = len(parts)
        loaded.populations = {tp: _counts(v) for tp, v in zip(parts, first[n : 2 * n], strict=True)}
        timer_rows = first[2 * n : 2 * n + len(bounded)]
        loaded.timers, loaded.capped = self._slices(bounded, timer_rows)
        instances = sorted(m.decode() for m in cast(set[bytes], first[-1]))
        self._load_rest(loaded, instances)
        return loaded

    def _load_rest(self, loaded: Loaded, instances: Sequence[str]) -> None:
        """The states of users with a due timer and no record in the batch, and the
        contributions."""
        keys, r = self._store.keys, self._store._redis
        extra: dict[Partition, list[str]] = {}
        for tp, entries in loaded.timers.items():
            known = loaded.states.setdefault(tp, {})
            wanted = sorted({u for _, u in entries} - set(known))
            if wanted:
                extra[tp] = wanted
        if not (extra or instances):
            return
        reads = r.pipeline(transaction=False)
        for tp, wanted in extra.items():
            _mget(reads, [keys.user(*tp, u) for u in wanted])
        if instances:
            _mget(reads, [keys.contribution(i) for i in instances])
        values = reads.execute()
        for (tp, wanted), states in zip(extra.items(), values[: len(extra)], strict=True):
            loaded.states[tp].update(zip(wanted, states, strict=True))
        if instances:
            loaded.contributions = {
                i: v for i, v in zip(instances, values[-1], strict=True) if v is not None
            }

    def _slices(
        self, bounded: Sequence[Partition], results: Sequence[Any]
    ) -> tuple[dict[Partition, list[tuple[int, str]]], dict[Partition, int]]:
        """Timer slices as loaded, completed with the ties of a full slice's last time."""
        keys, r = self._store.keys, self._store._redis
        limit = timer_slice(self._store.max_timers, len(bounded))
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

    def save_partitions(
        self, batch: SaveSet, written: Callable[[Partition], None] | None = None
    ) -> None:
        done: list[Partition] = []
        try:
            for tp in sorted(batch.partitions):
                write = batch.partitions[tp]
                if write.empty:
                    continue
                pipe = self._pipes.get(tp)
                if pipe is None:
                    raise StateStoreError(f"partition {tp} was not loaded by this batch")
                try:
                    pipe.multi()
                    self._queue(pipe, tp, write)
                    pipe.execute()
                except WatchError as exc:
                    raise Fenced(
                        f"partition {tp}: its epoch or applied offset changed since the "
                        f"load ({exc}); saved before it: {done}"
                    ) from None
                except REDIS_FAILURES as exc:
                    raise StateStoreError(
                        f"saving partition {tp}: {exc}; saved before it: {done}"
                    ) from exc
                done.append(tp)
                if written is not None:
                    written(tp)
        except BaseException:
            self._reset()
            raise
        for pipe in self._pipes.values():
            pipe.reset()
        self._pipes.clear()

    def _queue(self, pipe: Any, tp: Partition, write: PartitionWrite) -> None:
        keys = self._store.keys
        if write.states:  # one command for the partition's states (one hash slot)
            _mset(pipe, [(keys.user(*tp, user), value) for user, value in write.states.items()])
        for user, value in write.quiet_states.items():
            pipe.set(keys.user(*tp, user), value, xx=True)
        if write.deleted_users:
            pipe.delete(*[keys.user(*tp, u) for u in write.deleted_users])
        if write.applied is not None:
            pipe.set(keys.applied(*tp), write.applied)
        if write.watermark is not None:
            pipe.set(keys.watermark(*tp), write.watermark)
        if write.outbox:
            pipe.rpush(keys.outbox(*tp), *write.outbox)
        if write.timers_set:
            pipe.zadd(keys.timers(*tp), dict(write.timers_set))
        if write.timers_clear:
            pipe.zrem(keys.timers(*tp), *write.timers_clear)
        for tier, n in write.counts.population.items():
            if n:
                pipe.hincrby(keys.populations(*tp), tier, n)
        for field, n in write.counts.conversions.items():
            if n:
                pipe.hincrby(keys.conversions(*tp), field, n)

    def save_learning(self, batch: SaveSet) -> bool:
        keys, pipe = self._store.keys, self._models
        try:
            if not batch.learns:
                return True
            pipe.multi()
            if batch.model is not None:
                pipe.set(keys.model, batch.model)
            if batch.drop_contributions:
                pipe.delete(*[keys.contribution(i) for i in batch.drop_contributions])
                pipe.srem(keys.contributors, *batch.drop_contributions)
            if batch.contribution is not None:
                instance, value = batch.contribution
                pipe.set(keys.contribution(instance), value)
                pipe.sadd(keys.contributors, instance)
            pipe.execute()
            return True
        except WatchError:
            return False
        except REDIS_FAILURES as exc:
            raise StateStoreError(f"saving the model and contribution: {exc}") from exc
        finally:
            self._reset()

    def abort(self) -> None:
        self._reset()

    def _reset(self) -> None:
        """UNWATCH everything and give the connections back."""
        pipes = [*self._pipes.values(), self._models]
        self._pipes.clear()
        self._models = None
        self._store._open.discard(self)
        for pipe in pipes:
            if pipe is not None:
                pipe.reset()


def _mget(pipe: Any, keys: Sequence[str]) -> None:
    """Queue an MGET of ``keys``, all in one slot: a cluster pipeline refuses its ``mget``
    method (keys may span slots), not the command."""
    pipe.execute_command("MGET", *keys)


def _mset(pipe: Any, pairs: Sequence[tuple[str, bytes]]) -> None:
    """Queue an MSET of ``pairs``, all in one slot: a cluster pipeline refuses its ``mset``
    method (keys may span slots), not the command."""
    pipe.execute_command("MSET", *[item for pair in pairs for item in pair])


def _int(value: bytes | None, default: int) -> int:
    return int(value) if value is not None else default


def _counts(raw: Mapping[bytes, bytes]) -> dict[str, int]:
    """A counts hash as read (bytes) as counts by name."""
    return {k.decode(): int(v) for k, v in raw.items()}
