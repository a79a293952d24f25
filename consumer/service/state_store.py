"""Where user state, offsets, timers, the outbox and the models live: Redis, or memory
(embedded mode and replays).

**Ownership.** An instance :meth:`~StateStore.acquire` s a partition when the group gives
it: the partition's owner epoch goes up by one (``INCR``) and the instance remembers the
value. Every save and every outbox trim checks that the stored epoch is still the one it
holds; an instance that stalled while the partition moved on (a zombie) finds a higher
epoch and is fenced (:class:`~consumer.service.errors.Fenced`) instead of writing over the
new owner's work. A lower epoch than the one held means the store went back in time (a
restore, a failover to a lagging replica): also fenced, and the owner acquires again.

**A batch** is one :class:`Transaction`: ``load`` reads everything the batch needs
(users' states, applied offsets, watermarks, the timers due within the batch and their
users, the global model and the other instances' contributions); ``save_partitions``
writes the batch's :class:`SaveSet`, each input partition's part atomically (all its
keys share one Redis Cluster slot, :mod:`consumer.service.keys`): on Redis Cluster one
partition at a time, on one Redis server all of them in one transaction (one round
trip); then ``save_learning`` writes the model and this instance's contribution, atomically, in
the models' slot. A partition's tier populations and conversion counts
(:mod:`consumer.service.tier_counts`) are written with its states, as changes. Redis
fences with ``WATCH``: per partition on its epoch and its applied offset, and on the
model for the learning. Not on each user the batch reads: whoever writes a partition's
users holds its epoch (an instance acquires it; the ``tierstream state`` tools that
rewrite states run with the group stopped), and Redis's WATCH costs time quadratic in
the keys one connection watches. A partition whose epoch or applied offset changed in
between is not written (Fenced), nor any after it (on one server: none of the
batch's), nor the learning; learning that
finds another model version stored is not written (``save_learning`` says False).
:mod:`consumer.service.checkpoint` says what each outcome means.

**Timers are loaded in bounded slices**: at most ``max_timers`` per batch, shared evenly
by the batch's partitions (:func:`timer_slice`; plus every timer due at the same
millisecond as a slice's last one). When a slice is full, :attr:`Loaded.capped` says up
to which event time the loaded timers are complete, and the batch stops there
(:mod:`consumer.service.batch`): one batch never loads every user of a partition, and
the users it holds parsed are bounded by ``max_timers`` and the records it polled,
whatever the number of users or of partitions.
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Concatenate, Final, ParamSpec, Protocol, TypeVar

from consumer.service.errors import Fenced
from consumer.service.tier_counts import TierCounts

Partition = tuple[str, int]
#: Timers loaded per batch, by default.
MAX_TIMERS: Final = 10_000


def timer_slice(max_timers: int, partitions: int) -> int:
    """How many due timers each partition loads when ``partitions`` of one batch have
    timers to load: the batch's ``max_timers`` shared evenly, at least one each (a
    slice of none would never move on).

    >>> timer_slice(10_000, 1), timer_slice(10_000, 4), timer_slice(3, 4)
    (10000, 2500, 1)
    """
    return max(1, max_timers // max(1, partitions))


@dataclass
class Loaded:
    """What a batch reads before it applies anything."""

    #: Per partition, the states of its users the batch reads (None: no state stored).
    states: dict[Partition, dict[str, bytes | None]]
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
    #: Per partition, its users per tier as stored (the partition is this instance's:
    #: nobody else changes them until the batch is written).
    populations: dict[Partition, dict[str, int]] = field(default_factory=dict)


@dataclass
class PartitionWrite:
    """What a batch writes in one input partition: one Redis Cluster slot, one atomic
    write."""

    #: States of users with an event in the batch: written with a fresh time-to-live.
    states: dict[str, bytes] = field(default_factory=dict)
    #: States changed by a timer alone: written only if the state still exists, so a
    #: timer never recreates a state deleted meanwhile.
    quiet_states: dict[str, bytes] = field(default_factory=dict)
    #: Users whose lifetime ended (forgotten, or silent past the state's time-to-live):
    #: their state is deleted.
    deleted_users: list[str] = field(default_factory=list)
    #: The new applied offset (None: unchanged).
    applied: int | None = None
    #: The new event-time watermark (None: unchanged).
    watermark: int | None = None
    outbox: list[bytes] = field(default_factory=list)
    timers_set: dict[str, int] = field(default_factory=dict)
    timers_clear: list[str] = field(default_factory=list)
    #: What the batch changes in the partition's tier populations (users per tier, + in,
    #: - out) and its conversion counts (labels resolved).
    counts: TierCounts = field(default_factory=TierCounts)

    @property
    def empty(self) -> bool:
        """Nothing to write."""
        return not (
            self.states
            or self.quiet_states
            or self.deleted_users
            or self.applied is not None
            or self.watermark is not None
            or self.outbox
            or self.timers_set
            or self.timers_clear
            or self.counts.population
            or self.counts.conversions
        )


@dataclass
class SaveSet:
    """What a batch writes: one :class:`PartitionWrite` per input partition, then the
    models (:mod:`consumer.service.checkpoint`, step 3)."""

    partitions: dict[Partition, PartitionWrite] = field(default_factory=dict)
    model: bytes | None = None
    contribution: tuple[str, bytes] | None = None
    #: Contributions folded into the new ``model`` (or based on an older version): gone.
    drop_contributions: Sequence[str] = ()

    def at(self, partition: Partition) -> PartitionWrite:
        """The write of ``partition`` (created empty)."""
        return self.partitions.setdefault(partition, PartitionWrite())

    @property
    def applied(self) -> dict[Partition, int]:
        """The new applied offsets."""
        return {tp: w.applied for tp, w in self.partitions.items() if w.applied is not None}

    @property
    def outbox(self) -> dict[Partition, list[bytes]]:
        """The outputs appended to each partition's outbox."""
        return {tp: w.outbox for tp, w in self.partitions.items() if w.outbox}

    @property
    def watermarks(self) -> dict[Partition, int]:
        """The new event-time watermarks."""
        return {tp: w.watermark for tp, w in self.partitions.items() if w.watermark is not None}

    @property
    def learns(self) -> bool:
        """Whether there is anything to write in the models' slot."""
        return (
            self.model is not None or self.contribution is not None or bool(self.drop_contributions)
        )


class Transaction(Protocol):
    """One batch's read-then-write against the store."""

    def load(
        self, users: Mapping[Partition, Sequence[str]], timer_bounds: Mapping[Partition, int]
    ) -> Loaded:
        """Everything the batch reads: ``users`` by partition, timers due at or before
        ``timer_bounds[p]`` (and their users). Raises Fenced if this instance does not
        hold every partition of the batch."""
        ...

    def save_partitions(
        self, batch: SaveSet, written: Callable[[Partition], None] | None = None
    ) -> None:
        """Write each partition's part of ``batch`` at once, calling ``written`` with
        each partition once it is; raises Fenced or StateStoreError at the first
        partition not written. Partition by partition (the ones before it are written),
        or, where a store writes them all in one transaction (Redis on one server), all
        or none."""
        ...

    def save_learning(self, batch: SaveSet) -> bool:
        """Write the model and this instance's contribution at once, if the stored model
        is still the one loaded and, for a new version (``batch.model``), every other
        instance's contribution is one it drops, as loaded; False if not (another
        instance wrote a version, or contributed since the load), and nothing was
        written. Raises StateStoreError. Ends the transaction. A transaction of no
        partition (``begin([])``) loads and saves the learning alone."""
        ...

    def abort(self) -> None:
        """End the transaction without writing more (the batch failed): what the load
        holds (Redis: WATCHed connections) is released."""
        ...


class StateStore(Protocol):
    """The state backend interface (Redis or memory)."""

    def waiting_s(self) -> float:
        """How long a call of this store has been waiting for its server (0: none)."""
        ...

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

    def clear_outboxes(self, counts: Mapping[Partition, int]) -> None:
        """:meth:`clear_outbox` for each partition of ``counts``: the ones whose epoch
        is still the one held are trimmed, then Fenced names the others, if any."""
        ...

    def record_partition_count(self, topic: str, partitions: int) -> int:
        """Record ``topic``'s partition count unless one is recorded (then, as the state
        starts empty, its tier populations are counted from the start); return the
        recorded one (:mod:`consumer.service.partitioning`)."""
        ...

    def partition_counts(self) -> dict[str, int]:
        """The recorded partition count of every topic with state."""
        ...

    def populations_counted(self, topic: str) -> bool:
        """Whether ``topic``'s tier populations count every user
        (:mod:`consumer.service.tier_counts`)."""
        ...

    def tier_counts(self, partitions: Sequence[Partition]) -> dict[Partition, TierCounts]:
        """The tier populations and conversion counts of ``partitions``, in one round
        trip."""
        ...

    def get_user(self, user_id: str) -> bytes | None:
        """One user's stored state, in the partition the recorded count routes them to."""
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


def fenced(partitions: Sequence[Partition], held: Mapping[Partition, int], stored: Any) -> Fenced:
    """The error of a batch over ``partitions`` whose stored epochs are not the held ones."""
    return Fenced(
        f"partitions {sorted(partitions)}: this instance holds epochs "
        f"{[held.get(tp) for tp in partitions]}, the store has {stored}"
    )


def compact(value: bytes) -> bytes:
    """``value`` in a block of its own size, for keeping. ``orjson.dumps`` returns its
    bytes in the buffer it grew while writing (a 3.5 KB state holds about 8 KB of
    memory): kept for every user of a memory store, the slack would be most of it.

    >>> import orjson
    >>> raw = orjson.dumps({"k": "x" * 2000})
    >>> kept = compact(raw)
    >>> kept == raw, kept is raw
    (True, False)
    """
    return bytes(memoryview(value))


class Holdings:
    """The partitions a store handle holds (its instance's), with their epochs, and how
    long a call of it has been waiting for its server (:meth:`waiting_s`)."""

    def __init__(self) -> None:
        self._held: dict[Partition, int] = {}
        #: When the call waiting for the server began (monotonic), None when none is.
        self._waiting_since: float | None = None

    def waiting_s(self) -> float:
        """How long the call in progress (:func:`waits_on_server`) has been waiting for
        the server, in seconds; 0 when none is. Safe from any thread (/readyz)."""
        since = self._waiting_since
        return 0.0 if since is None else time.monotonic() - since

    def release(self, partitions: Sequence[Partition]) -> None:
        """Stop holding ``partitions`` (they were revoked)."""
        for tp in partitions:
            self._held.pop(tp, None)

    def held(self) -> dict[Partition, int]:
        """The partitions held, with their epochs."""
        return dict(self._held)


_P = ParamSpec("_P")
_R = TypeVar("_R")


def waits_on_server(
    method: Callable[Concatenate[Any, _P], _R],
) -> Callable[Concatenate[Any, _P], _R]:
    """Mark a method of a store (or of its transaction, whose ``_store`` it is) as a call
    that waits for the server: :meth:`Holdings.waiting_s` counts from its start until it
    returns (an outer call's start when one calls another).

    >>> class Store(Holdings):
    ...     @waits_on_server
    ...     def read(self, seconds: float) -> float:
    ...         time.sleep(seconds)
    ...         return self.waiting_s()
    >>> store = Store()
    >>> store.read(0.05) >= 0.05, store.waiting_s()
    (True, 0.0)
    """

    @functools.wraps(method)
    def waiting(self: Any, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        holdings: Holdings = getattr(self, "_store", self)
        if holdings._waiting_since is not None:
            return method(self, *args, **kwargs)
        holdings._waiting_since = time.monotonic()
        try:
            return method(self, *args, **kwargs)
        finally:
            holdings._waiting_since = None

    return waiting


class MemoryStateStore(Holdings):
    """State in this process's memory: the embedded mode and replays. Not shared between
    processes, not durable; the same interface and semantics as Redis otherwise (a user's
    state is kept by user id: a replay has no slots to keep apart). :meth:`handle` gives
    another instance's view of the same memory, as two processes share a Redis.

    >>> store = MemoryStateStore()
    >>> store.acquire([("t", 0)])
    {('t', 0): 1}
    >>> txn = store.begin([("t", 0)])
    >>> txn.load({("t", 0): ["u1"]}, {}).states
    {('t', 0): {'u1': None}}
    >>> batch = SaveSet({("t", 0): PartitionWrite({"u1": b"{}"}, applied=9, outbox=[b"x"],
    ...                                           timers_set={"u1": 50})})
    >>> txn.save_partitions(batch), txn.save_learning(batch)
    (None, True)
    >>> loaded = store.begin([("t", 0)]).load({("t", 0): ["u1"]}, {("t", 0): 60})
    >>> loaded.states, loaded.applied, loaded.timers, store.outbox(("t", 0))
    ({('t', 0): {'u1': b'{}'}}, {('t', 0): 9}, {('t', 0): [(50, 'u1')]}, [b'x'])
    >>> other = store.handle()
    >>> other.get_user("u1"), other.held()
    (b'{}', {})
    """

    def __init__(self, *, max_timers: int = MAX_TIMERS) -> None:
        super().__init__()
        self.users: dict[str, bytes] = {}
        self.applied: dict[Partition, int] = {}
        self.watermarks: dict[Partition, int] = {}
        self.outboxes: dict[Partition, list[bytes]] = {}
        self.timers: dict[Partition, dict[str, int]] = {}
        self.epoch: dict[Partition, int] = {}
        #: The global model, under ``"model"`` (a dict, so that handles share it).
        self.models: dict[str, bytes] = {}
        self.contributions: dict[str, bytes] = {}
        self.partitions: dict[str, int] = {}
        #: Per partition, its tier populations and conversion counts.
        self.counts: dict[Partition, TierCounts] = {}
        #: Topics whose populations count every user.
        self.counted: set[str] = set()
        self.max_timers = max_timers

    @property
    def model(self) -> bytes | None:
        """The stored global model."""
        return self.models.get("model")

    @model.setter
    def model(self, value: bytes | None) -> None:
        if value is None:
            self.models.pop("model", None)
        else:
            self.models["model"] = value

    def handle(self) -> MemoryStateStore:
        """Another instance's handle on the same memory: it shares everything stored and
        holds no partition yet."""
        other = copy.copy(self)
        Holdings.__init__(other)
        return other

    def ping(self) -> None:
        return None

    def acquire(self, partitions: Sequence[Partition]) -> dict[Partition, int]:
        got = {}
        for tp in partitions:
            self.epoch[tp] = got[tp] = self.epoch.get(tp, 0) + 1
        self._held.update(got)
        return got

    def epochs(self, partitions: Sequence[Partition]) -> dict[Partition, int]:
        return {tp: self.epoch.get(tp, 0) for tp in partitions}

    def check_owner(self, partitions: Sequence[Partition]) -> None:
        if any(self.epoch.get(tp, 0) != self._held.get(tp) for tp in partitions):
            raise fenced(partitions, self._held, [self.epoch.get(tp, 0) for tp in partitions])

    def applied_offsets(self, partitions: Sequence[Partition]) -> dict[Partition, int | None]:
        return {tp: self.applied.get(tp) for tp in partitions}

    def begin(self, partitions: Sequence[Partition]) -> _MemoryTransaction:
        return _MemoryTransaction(self, partitions)

    def outbox(self, partition: Partition) -> list[bytes]:
        return list(self.outboxes.get(partition, ()))

    def clear_outbox(self, partition: Partition, count: int) -> None:
        self.check_owner([partition])
        del self.outboxes.get(partition, [])[:count]

    def clear_outboxes(self, counts: Mapping[Partition, int]) -> None:
        refused: list[Fenced] = []
        for tp, count in counts.items():
            try:
                self.clear_outbox(tp, count)
            except Fenced as exc:
                refused.append(exc)
        if refused:
            raise refused[0]

    def record_partition_count(self, topic: str, partitions: int) -> int:
        if topic not in self.partitions:
            self.counted.add(topic)
        return self.partitions.setdefault(topic, partitions)

    def partition_counts(self) -> dict[str, int]:
        return dict(self.partitions)

    def populations_counted(self, topic: str) -> bool:
        return topic in self.counted

    def tier_counts(self, partitions: Sequence[Partition]) -> dict[Partition, TierCounts]:
        found = {}
        for tp in partitions:
            counts = self.counts.get(tp, TierCounts())
            found[tp] = TierCounts(dict(counts.population), dict(counts.conversions))
        return found

    def get_user(self, user_id: str) -> bytes | None:
        return self.users.get(user_id)

    def get_users(self, user_ids: Sequence[str]) -> dict[str, bytes | None]:
        """The stored states of ``user_ids``."""
        return {u: self.users.get(u) for u in user_ids}

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
        self._contributions: dict[str, bytes] = {}

    def load(
        self, users: Mapping[Partition, Sequence[str]], timer_bounds: Mapping[Partition, int]
    ) -> Loaded:
        s = self._store
        s.check_owner(self._partitions)
        self._seen = {tp: s.applied.get(tp, -1) for tp in self._partitions}
        self._model = s.model
        self._contributions = dict(s.contributions)
        timers: dict[Partition, list[tuple[int, str]]] = {}
        capped: dict[Partition, int] = {}
        limit = timer_slice(s.max_timers, len(timer_bounds))
        for tp, bound in timer_bounds.items():
            due = sorted((d, u) for u, d in s.timers.get(tp, {}).items() if d <= bound)
            if len(due) > limit:
                last = due[limit - 1][0]
                due = [e for e in due if e[0] <= last]
                capped[tp] = last
            timers[tp] = due
        states: dict[Partition, dict[str, bytes | None]] = {}
        for tp in self._partitions:
            wanted = [*users.get(tp, ()), *(u for _, u in timers.get(tp, ()))]
            states[tp] = {u: s.users.get(u) for u in wanted}
        return Loaded(
            states=states,
            applied=dict(self._seen),
            watermarks={tp: s.watermarks.get(tp, -1) for tp in self._partitions},
            timers=timers,
            capped=capped,
            model=s.model,
            contributions=dict(s.contributions),
            populations={
                tp: dict(s.counts.get(tp, TierCounts()).population) for tp in self._partitions
            },
        )

    def save_partitions(
        self, batch: SaveSet, written: Callable[[Partition], None] | None = None
    ) -> None:
        s = self._store
        for tp, write in sorted(batch.partitions.items()):
            if write.empty:
                continue
            s.check_owner([tp])
            if s.applied.get(tp, -1) != self._seen.get(tp, -1):
                raise Fenced(f"partition {tp} was written concurrently")
            self._write(tp, write)
            if written is not None:
                written(tp)

    def _write(self, tp: Partition, write: PartitionWrite) -> None:
        s = self._store
        for user, value in write.states.items():
            s.users[user] = compact(value)
        for user, value in write.quiet_states.items():
            if user in s.users:
                s.users[user] = compact(value)
        for user in write.deleted_users:
            s.users.pop(user, None)
        if write.applied is not None:
            s.applied[tp] = write.applied
        if write.watermark is not None:
            s.watermarks[tp] = write.watermark
        if write.outbox:
            s.outboxes.setdefault(tp, []).extend(write.outbox)
        if write.timers_set:
            s.timers.setdefault(tp, {}).update(write.timers_set)
        for user in write.timers_clear:
            s.timers.get(tp, {}).pop(user, None)
        s.counts.setdefault(tp, TierCounts()).add(write.counts)

    def abort(self) -> None:
        return None

    def save_learning(self, batch: SaveSet) -> bool:
        s = self._store
        if not batch.learns:
            return True
        if s.model != self._model:
            return False
        if batch.model is not None:
            # A new version folds every other contribution as loaded (as on Redis).
            mine = batch.contribution[0] if batch.contribution else None
            others = {i: c for i, c in s.contributions.items() if i != mine}
            if any(i not in batch.drop_contributions for i in others) or any(
                self._contributions.get(i) != others.get(i) for i in batch.drop_contributions
            ):
                return False
            s.model = batch.model
        for instance in batch.drop_contributions:
            s.contributions.pop(instance, None)
        if batch.contribution is not None:
            s.contributions[batch.contribution[0]] = batch.contribution[1]
        return True
