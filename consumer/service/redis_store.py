"""The state store in Redis: a single server, Redis Cluster or Sentinel, the same code
(:mod:`consumer.service.redis_connection` opens each; :mod:`consumer.service.state_store`
says what a store does, :mod:`consumer.service.keys` where each thing lives, every
atomic write in one hash slot).

A batch's round trips are few, since each is a wait on another process: on Redis
Cluster a batch WATCHes and writes each partition on its own (their keys are in
different slots, so on different nodes as the cluster grows); where every key is on one
server (a single server, Sentinel's primary) one connection WATCHes every partition of
the batch and one MULTI/EXEC writes them all, and one script trims all their outboxes.
The learning needs no WATCH: a script writes it only over the model the load read. A
batch of two partitions makes 6 round trips there (WATCH, read, save, learning, check,
trim; one more when timers are due or the contributing instances changed) where it made
11, of four 6 where it made 17 (docs/performance.md, "Fewer round trips to Redis per
batch").
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TypeVar, cast

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
    waits_on_server,
)
from consumer.service.tier_counts import TierCounts

_Item = TypeVar("_Item")

#: Trim outboxes, each only if its partition's epoch is still the one held: KEYS an
#: epoch and an outbox per partition, ARGV the epoch held and the count per partition;
#: the (1-based) numbers of the partitions whose epoch is another (not trimmed).
_GUARDED_TRIMS: Final = """
local refused = {}
for i = 1, #KEYS, 2 do
  if redis.call('GET', KEYS[i]) == ARGV[i] then
    redis.call('LTRIM', KEYS[i + 1], tonumber(ARGV[i + 1]), -1)
  else
    refused[#refused + 1] = (i + 1) / 2
  end
end
return refused
"""
#: The learning (3b), written only if the stored model is still the one the batch
#: loaded (a compare-and-set, in the models' slot). A model version's bytes begin with
#: its version and end with its name, which carries a digest of its content
#: (:meth:`GlobalModel.name <online_models.global_model.GlobalModel.name>`): their
#: length and first and last 64 bytes tell one stored version from another without
#: reading or hashing the whole (a SHA-1 of a 100 KB model costs Redis 0.26 ms).
#: A new version is written only if it folds every other contribution as stored now:
#: each contribution it drops is the one the batch loaded (its SHA-1, '' for one that
#: was absent), and no other instance became a contributor since the load. Without
#: that check, an instance that saved more learning between another's load and its new
#: version lost it silently (the version folded its older contribution and deleted the
#: newer one).
#: KEYS the model, the contributors set, this instance's contribution, the dropped
#: ones' contributions; ARGV the loaded model's length (0: none), first and last 64
#: bytes, then '1' and the new model (or '0' and ''), this instance and its
#: contribution (or '' and ''), the number of dropped contributions, the instances
#: whose contributions are dropped, then their SHA-1s as loaded.
#: 1 if written, 0 if the model (or, for a new version, a contribution) changed.
_LEARNING: Final = """
local n = redis.call('STRLEN', KEYS[1])
if n ~= tonumber(ARGV[1]) then return 0 end
if n > 0 and (redis.call('GETRANGE', KEYS[1], 0, 63) ~= ARGV[2]
              or redis.call('GETRANGE', KEYS[1], -64, -1) ~= ARGV[3]) then
  return 0
end
local d = tonumber(ARGV[8])
if ARGV[4] == '1' then
  local folded = {}
  for i = 1, d do
    local v = redis.call('GET', KEYS[3 + i])
    if (v and redis.sha1hex(v) or '') ~= ARGV[8 + d + i] then return 0 end
    folded[ARGV[8 + i]] = true
  end
  for _, m in ipairs(redis.call('SMEMBERS', KEYS[2])) do
    if m ~= ARGV[6] and not folded[m] then return 0 end
  end
  redis.call('SET', KEYS[1], ARGV[5])
end
for i = 1, d do
  redis.call('DEL', KEYS[3 + i])
  redis.call('SREM', KEYS[2], ARGV[8 + i])
end
if ARGV[6] ~= '' then
  redis.call('SET', KEYS[3], ARGV[7])
  redis.call('SADD', KEYS[2], ARGV[6])
end
return 1
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
        #: Every key on one server (not Redis Cluster): a batch's partitions are
        #: WATCHed on one connection and written in one MULTI/EXEC, all or none.
        self.one_server = self.address.kind != "cluster"
        self._client: Any = None
        self._trims: Any = None
        self._learning: Any = None
        self._record_count: Any = None
        #: The instances that had contributions at the last load: the next load reads
        #: their contributions with everything else, in its first round trip.
        self.contributors: list[str] = []
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
            self._trims = self._client.register_script(_GUARDED_TRIMS)
            self._learning = self._client.register_script(_LEARNING)
            self._record_count = self._client.register_script(_RECORD_COUNT)
        return self._client

    def unreachable(self, exc: Exception) -> StateStoreUnavailable:
        """The one-line error of a Redis that does not answer, its password masked."""
        safe = str(exc).replace(self.url, mask_url(self.url))
        return StateStoreUnavailable(
            f"cannot reach Redis at {mask_url(self.url)} ({safe}); start it (make "
            "stack-up) or set TIERSTREAM_REDIS_URL"
        )

    @waits_on_server
    def ping(self) -> None:
        try:
            self._redis.ping()
        except REDIS_FAILURES as exc:
            raise self.unreachable(exc) from None

    @property
    def client(self) -> Any:
        """The Redis client (for tools that scan keys)."""
        return self._redis

    @waits_on_server
    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values of ``keys``, in any slots, in one round trip."""
        if not keys:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.get(key)
        return cast(list[bytes | None], pipe.execute())

    @waits_on_server
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

    @waits_on_server
    def outbox(self, partition: Partition) -> list[bytes]:
        try:
            return cast(list[bytes], self._redis.lrange(self.keys.outbox(*partition), 0, -1))
        except REDIS_FAILURES as exc:
            raise StateStoreError(f"reading outbox {partition}: {exc}") from exc

    def clear_outbox(self, partition: Partition, count: int) -> None:
        self.clear_outboxes({partition: count})

    @waits_on_server
    def clear_outboxes(self, counts: Mapping[Partition, int]) -> None:
        held = self._held
        missing = [tp for tp in counts if tp not in held]
        if missing:
            raise fenced(missing, held, "(not acquired)")
        refused: list[Partition] = []
        try:
            self._redis  # noqa: B018  (opens the client and its scripts)
            for group in self.transactions(list(counts)):
                keys = [k for tp in group for k in (self.keys.epoch(*tp), self.keys.outbox(*tp))]
                args = [a for tp in group for a in (held[tp], counts[tp])]
                refused += [group[i - 1] for i in self._trims(keys=keys, args=args)]
        except REDIS_FAILURES as exc:
            raise StateStoreError(f"clearing outboxes {sorted(counts)}: {exc}") from exc
        if refused:
            raise fenced(refused, held, "another epoch")

    def transactions(self, items: list[_Item]) -> list[list[_Item]]:
        """``items`` (of partitions, in order) as the atomic writes they go in: all in
        one on one server, one each (its slot) on Redis Cluster."""
        return [items] if self.one_server else [[item] for item in items]

    @waits_on_server
    def record_partition_count(self, topic: str, partitions: int) -> int:
        keys = [self.keys.partitions, self.keys.counted]
        try:
            self._redis  # noqa: B018  (opens the client and its script)
            recorded = self._record_count(keys=keys, args=[topic, partitions])
        except REDIS_FAILURES as exc:
            raise StateStoreError(f"recording the partition count of {topic}: {exc}") from exc
        return int(recorded)

    @waits_on_server
    def partition_counts(self) -> dict[str, int]:
        raw = cast(dict[bytes, bytes], self._redis.hgetall(self.keys.partitions))
        return {k.decode(): int(v) for k, v in raw.items()}

    @waits_on_server
    def populations_counted(self, topic: str) -> bool:
        try:
            return bool(self._redis.sismember(self.keys.counted, topic))
        except REDIS_FAILURES as exc:
            raise StateStoreError(f"reading whether {topic} is counted: {exc}") from exc

    @waits_on_server
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

    @waits_on_server
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

    @waits_on_server
    def get_model(self) -> bytes | None:
        return cast(bytes | None, self._redis.get(self.keys.model))

    @waits_on_server
    def get_contribution(self, instance: str) -> bytes | None:
        return cast(bytes | None, self._redis.get(self.keys.contribution(instance)))

    @waits_on_server
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
    """One batch: a WATCHed transaction per partition (its slot) on Redis Cluster, one
    for all of them where every key is on one server; the learning is a script that
    writes only over the model the load read (a compare-and-set).

    WATCH pins a connection per pipeline until the write or :meth:`_reset`; the reads go
    through plain pipelines, one round trip for every slot: a change after the WATCH
    still makes the EXEC that watched it fail.
    """

    def __init__(self, store: RedisStateStore, partitions: Sequence[Partition]) -> None:
        self._store = store
        self._partitions = list(partitions)
        self._pipes: dict[Partition, Any] = {}
        #: The model the load read: the learning is written only over the same one.
        self._model: bytes | None = None
        #: The contributors the load read, with their contributions (None: a member
        #: whose contribution was absent): a new version is written only over them.
        self._contributors: dict[str, bytes | None] = {}

    @waits_on_server
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
        # The partition's epoch and applied offset, not its users one by one: every
        # writer of a partition's users holds its epoch (a new owner raises it), and
        # WATCH costs Redis time quadratic in the keys one connection watches
        # (7.0 looks each new key up in a list of those already watched: 2,000 keys
        # took 25 ms, 4,000 took 94 ms; docs/performance.md, "Per-batch costs").
        if store.one_server and parts:  # no partition: the learning alone (a rebase)
            pipe = cast(Any, r.pipeline(transaction=True))
            pipe.watch(*[k for tp in parts for k in (keys.epoch(*tp), keys.applied(*tp))])
            self._pipes = dict.fromkeys(parts, pipe)
        else:
            for tp in parts:
                pipe = self._pipes[tp] = cast(Any, r.pipeline(transaction=True))
                pipe.watch(keys.epoch(*tp), keys.applied(*tp))
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
        # The contributions of the instances that contributed at the last load, read now
        # (they seldom change): a second round trip only if the set did.
        guess = store.contributors
        if guess:
            _mget(reads, [keys.contribution(i) for i in guess])
        reads.get(keys.model)
        reads.smembers(keys.contributors)
        first = reads.execute()
        loaded = Loaded(states={}, applied={}, model=first[-2])
        self._model = loaded.model
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
        store.contributors = instances
        members = instances
        if guess and guess == instances:
            loaded.contributions = _present(instances, first[-3])
            instances = []  # read already
        self._load_rest(loaded, instances)
        self._contributors = {i: loaded.contributions.get(i) for i in members}
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
            loaded.contributions = _present(instances, values[-1])

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

    @waits_on_server
    def save_partitions(
        self, batch: SaveSet, written: Callable[[Partition], None] | None = None
    ) -> None:
        writes = [(tp, batch.partitions[tp]) for tp in sorted(batch.partitions)]
        writes = [(tp, write) for tp, write in writes if not write.empty]
        done: list[Partition] = []
        try:
            for tp, _ in writes:
                if tp not in self._pipes:
                    raise StateStoreError(f"partition {tp} was not loaded by this batch")
            for group in self._store.transactions(writes):
                self._transact(group, done)
                for tp, _ in group:
                    done.append(tp)
                    if written is not None:
                        written(tp)
        except BaseException:
            self._reset()
            raise
        self._release_partitions()

    def _transact(
        self, writes: Sequence[tuple[Partition, PartitionWrite]], done: Sequence[Partition]
    ) -> None:
        """``writes`` in one MULTI/EXEC, on the connection that WATCHed their partitions:
        all or none."""
        if not writes:
            return
        pipe = self._pipes[writes[0][0]]
        try:
            pipe.multi()
            for tp, write in writes:
                self._queue(pipe, tp, write)
            pipe.execute()
        except WatchError as exc:
            watched = sorted(tp for tp, p in self._pipes.items() if p is pipe)
            raise Fenced(
                f"partitions {watched}: an epoch or applied offset changed since the load "
                f"({exc}); saved before: {list(done)}"
            ) from None
        except REDIS_FAILURES as exc:
            parts = [tp for tp, _ in writes]
            raise StateStoreError(
                f"saving partitions {parts}: {exc}; saved before: {list(done)}"
            ) from exc

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

    @waits_on_server
    def save_learning(self, batch: SaveSet) -> bool:
        # No WATCH on the model (a round trip at every load, an UNWATCH at every batch
        # that learns nothing): a script compares what is stored with what was loaded.
        store, keys = self._store, self._store.keys
        try:
            if not batch.learns:
                return True
            model = self._model
            instance, value = batch.contribution or ("", b"")
            dropped = set(batch.drop_contributions)
            if batch.model is not None:  # members whose contribution was absent go too
                absent = {i for i, c in self._contributors.items() if c is None}
                dropped = (dropped | absent) - {instance}
            drop = sorted(dropped)
            digests = [_sha1(self._contributors.get(i)) for i in drop]
            written = store._learning(
                keys=[
                    keys.model,
                    keys.contributors,
                    keys.contribution(instance) if instance else keys.model,
                    *[keys.contribution(i) for i in drop],
                ],
                args=[
                    0 if model is None else len(model),
                    (model or b"")[:_ENDS],
                    (model or b"")[-_ENDS:],
                    "0" if batch.model is None else "1",
                    batch.model or b"",
                    instance,
                    value,
                    len(drop),
                    *drop,
                    *digests,
                ],
            )
            return bool(written)
        except REDIS_FAILURES as exc:
            raise StateStoreError(f"saving the model and contribution: {exc}") from exc
        finally:
            self._reset()

    def abort(self) -> None:
        self._reset()

    def _release_partitions(self) -> None:
        """UNWATCH the partitions (a pipeline that wrote already did) and give their
        connections back."""
        pipes = {id(p): p for p in self._pipes.values()}  # one for all on one server
        self._pipes.clear()
        for pipe in pipes.values():
            pipe.reset()

    def _reset(self) -> None:
        """UNWATCH everything and give the connections back."""
        self._release_partitions()
        self._store._open.discard(self)


#: The bytes of each end of a model the learning's compare-and-set compares.
_ENDS: Final = 64


def _sha1(value: bytes | None) -> str:
    """A contribution's digest as the learning script compares it ('' for none).

    >>> _sha1(b"abc"), _sha1(None)
    ('a9993e364706816aba3e25717850c26c9cd0d89d', '')
    """
    return "" if value is None else hashlib.sha1(value, usedforsecurity=False).hexdigest()


def _mget(pipe: Any, keys: Sequence[str]) -> None:
    """Queue an MGET of ``keys``, all in one slot: a cluster pipeline refuses its ``mget``
    method (keys may span slots), not the command."""
    pipe.execute_command("MGET", *keys)


def _mset(pipe: Any, pairs: Sequence[tuple[str, bytes]]) -> None:
    """Queue an MSET of ``pairs``, all in one slot: a cluster pipeline refuses its ``mset``
    method (keys may span slots), not the command."""
    pipe.execute_command("MSET", *[item for pair in pairs for item in pair])


def _present(instances: Sequence[str], values: Sequence[bytes | None]) -> dict[str, bytes]:
    """The contributions read for ``instances`` (one MGET), of those that have one."""
    return {i: v for i, v in zip(instances, values, strict=True) if v is not None}


def _int(value: bytes | None, default: int) -> int:
    return int(value) if value is not None else default


def _counts(raw: Mapping[bytes, bytes]) -> dict[str, int]:
    """A counts hash as read (bytes) as counts by name."""
    return {k.decode(): int(v) for k, v in raw.items()}
