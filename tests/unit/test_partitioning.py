"""Users live in the partition Kafka routes their key to; the state is written per
partition (one Redis Cluster slot each), then the learning; a batch whose learning meets
a version written meanwhile keeps its states and outputs and learns again on that version
(up to five times, then forgets what it learned)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.partitioner.default import DefaultPartitioner
from redis.crc import key_slot

from consumer.service.checkpoint import REBASES
from consumer.service.errors import Fenced, PartitionCountChanged, StateStoreError
from consumer.service.keys import KeySpace
from consumer.service.model_files import stored_model
from consumer.service.partitioning import check_partition_count, partition_of
from consumer.service.records import InputRecord
from consumer.service.state_store import (
    MemoryStateStore,
    PartitionWrite,
    SaveSet,
    _MemoryTransaction,
)
from consumer.service.tier_config import DEFAULT_TIERS_FILE, load_engine
from consumer.tools.replay import Replay
from online_models.engine import TierEngine


class _Cluster:
    """The metadata DefaultPartitioner asks for: one topic of ``n`` partitions."""

    def __init__(self, n: int) -> None:
        self.n = n

    def topics(self) -> set[str]:
        return {"t"}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.n))

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.n))


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=40), st.integers(1, 64))
def test_a_user_is_where_kafkas_producer_sends_their_key(user: str, n: int) -> None:
    key = user.encode()
    sent = DefaultPartitioner().partition("t", user, key, None, None, _Cluster(n))
    assert partition_of(user, n) == sent


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=30), st.integers(0, 63), st.text(min_size=1, max_size=30))
def test_every_key_of_a_partition_is_in_one_slot(user: str, partition: int, topic: str) -> None:
    topic = topic.replace("{", "").replace("}", "") or "t"
    keys = KeySpace("ts")
    same = [
        keys.user(topic, partition, user),
        keys.applied(topic, partition),
        keys.watermark(topic, partition),
        keys.outbox(topic, partition),
        keys.timers(topic, partition),
        keys.epoch(topic, partition),
    ]
    assert len({key_slot(k.encode()) for k in same}) == 1
    assert keys.parse_user(same[0]) == (topic, partition, user)
    models = [keys.model, keys.contribution(user), keys.contributors, keys.partitions]
    assert len({key_slot(k.encode()) for k in models}) == 1


def test_a_grown_topic_is_refused_with_one_line() -> None:
    store = MemoryStateStore()
    check_partition_count(store, "events", 2, prefix="ts")
    check_partition_count(store, "events", 2, prefix="ts")
    with pytest.raises(PartitionCountChanged) as err:
        check_partition_count(store, "events", 4, prefix="ts")
    message = str(err.value)
    assert "\n" not in message
    assert "has 4 partitions" in message and "written for 2" in message
    assert "tierstream state repartition" in message


def test_partitions_are_written_in_order_until_one_is_fenced() -> None:
    store = MemoryStateStore()
    parts = [("t", 0), ("t", 1), ("t", 2)]
    store.acquire(parts)
    txn = store.begin(parts)
    txn.load({}, {})
    store.epoch[("t", 1)] += 1  # another owner took partition 1
    batch = SaveSet({tp: PartitionWrite({f"u{tp[1]}": b"{}"}, applied=5) for tp in parts})
    with pytest.raises(Fenced):
        txn.save_partitions(batch)
    assert store.users == {"u0": b"{}"}
    assert store.applied == {("t", 0): 5}


def test_learning_is_not_written_over_another_model_version() -> None:
    store = MemoryStateStore()
    store.acquire([("t", 0)])
    txn = store.begin([("t", 0)])
    txn.load({}, {})
    store.model = b"another version"
    learned = SaveSet(model=b"mine", contribution=("me", b"{}"))
    assert txn.save_learning(learned) is False
    assert store.model == b"another version" and store.contributions == {}


class _Watched(MemoryStateStore):
    """A store whose learning saves first pass through :meth:`before_learning`."""

    def before_learning(self, batch: SaveSet) -> None: ...

    def begin(self, partitions: Any) -> _MemoryTransaction:
        store = self

        class Txn(_MemoryTransaction):
            def save_learning(self, batch: SaveSet) -> bool:
                store.before_learning(batch)
                return super().save_learning(batch)

        return Txn(self, partitions)


class _Racing(_Watched):
    """A store in which another instance writes a model version at each of the first
    ``races`` learning saves that write something (the first batch that learnt
    something, then its rebases): the same model each time, in other bytes."""

    def __init__(self, version: bytes, races: int = 1) -> None:
        super().__init__()
        self.versions = (version, version + b" ")
        self.races = races
        self.raced = 0

    def before_learning(self, batch: SaveSet) -> None:
        if batch.learns and self.raced < self.races:
            self.model = self.versions[self.raced % 2]
            self.raced += 1


class _FailingRebase(_Racing):
    """Races once, then the rebase's own load fails (Redis gone in between)."""

    failed = False

    def begin(self, partitions: Any) -> _MemoryTransaction:
        txn = super().begin(partitions)
        if not partitions and self.raced and not self.failed:
            self.failed = True

            def load(*_: Any) -> Any:
                raise StateStoreError("the connection dropped")

            txn.load = load  # type: ignore[method-assign]
        return txn


def _month() -> list[InputRecord]:
    """600 events of 30 users over 20 days: the first 200 teach the models nothing (no
    moment of the learning grid has come), the next 200 some samples."""
    from consumer.demo.synthetic import GeneratorConfig, generate

    config = GeneratorConfig(users=30, events=600, seed=9, days=20)
    return [InputRecord("t", 0, i, None, r.key, r.value) for i, r in enumerate(generate(config))]


def _replayed(
    store: MemoryStateStore,
    records: list[InputRecord],
    outcomes: list[Any] | None = None,
    *,
    engine: TierEngine | None = None,
) -> list[Any]:
    """The outputs of ``records`` replayed on ``store`` (by a fresh engine unless
    ``engine``); each batch's outcome into ``outcomes``."""
    out: list[Any] = []
    engine = engine or load_engine(DEFAULT_TIERS_FILE)
    replay = Replay(engine, store, emit=out.append, batch_size=200)
    if outcomes is not None:
        replay.on_batch = lambda stats, _: outcomes.append(stats.outcome)
    replay.run(records)
    return out


def _initial() -> bytes:
    """The packaged engine's first model, as stored."""
    return orjson.dumps(load_engine(DEFAULT_TIERS_FILE).models.model.to_json())


def _learned(store: MemoryStateStore) -> int:
    return int(orjson.loads(store.contributions["local"])["samples"])


def test_a_batch_whose_learning_loses_the_race_keeps_its_states_and_learns_again() -> None:
    """The batch's states and outputs stand, and its learning is learnt again on the
    version stored meanwhile (rebased), not lost: the store ends with all of it."""
    records = _month()
    raced, clean, first = _Racing(_initial()), MemoryStateStore(), MemoryStateStore()
    outputs, clean_outputs = _replayed(raced, records), _replayed(clean, records)
    _replayed(first, records[:400])
    assert raced.raced and raced.applied == clean.applied
    assert outputs == clean_outputs and raced.users == clean.users  # scores: the same model
    assert _learned(first) > 0  # the raced batch had learning to lose
    assert _learned(raced) == _learned(clean) > _learned(first)


class _Saves(_Watched):
    """Counts the learning saves that write something."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def before_learning(self, batch: SaveSet) -> None:
        self.writes += batch.learns


def test_a_batch_that_learnt_nothing_leaves_the_models_slot_alone() -> None:
    """No contribution written again as it was (a round trip on Redis, and a rebase
    whenever another instance wrote a version meanwhile); the next batch that learns
    writes its contribution."""
    records, store = _month(), _Saves()
    _replayed(store, records[:200])
    assert store.writes == 0 and store.model is None and store.contributions == {}
    _replayed(store, records[:400])  # from the applied offsets on: the second batch
    assert store.writes == 1 and _learned(store) > 0


@pytest.mark.parametrize("races", [REBASES, REBASES + 1])
def test_a_batch_rebased_as_often_as_allowed_keeps_its_learning_then_drops_it(
    races: int,
) -> None:
    """Refused ``REBASES`` times (its first save and four rebases), the fifth rebase
    saves it; refused once more, the batch's learning is dropped (the batch's outcome
    says so, as the metric counts it), its states and outputs stand, and the next batches
    learn on the stored version."""
    records = _month()
    raced, clean, first = _Racing(_initial(), races), MemoryStateStore(), MemoryStateStore()
    outcomes: list[Any] = []
    outputs, clean_outputs = _replayed(raced, records, outcomes), _replayed(clean, records)
    _replayed(first, records[:400])
    assert raced.raced == races and raced.applied == clean.applied
    assert outputs == clean_outputs and raced.users == clean.users
    assert [o.learning_rebases for o in outcomes] == [0, REBASES, 0]
    dropped = [o.learning_dropped for o in outcomes]
    if races == REBASES:
        assert _learned(raced) == _learned(clean) and dropped == [False] * 3
    else:
        assert _learned(raced) == _learned(clean) - _learned(first) > 0
        assert dropped == [False, True, False]


def test_a_rebase_that_fails_rolls_the_models_back_to_the_batch_start() -> None:
    """The batch's states are saved (3a) and the failure is raised as a failed 3b is:
    its learning lost, the models as they were when it started (nothing half adopted,
    no journal left), and a restart goes on from the store."""
    records = _month()
    store, clean, first = _FailingRebase(_initial()), MemoryStateStore(), MemoryStateStore()
    _replayed(first, records[:400])  # what the failing batch learnt
    engine = load_engine(DEFAULT_TIERS_FILE)
    with pytest.raises(StateStoreError):
        _replayed(store, records, engine=engine)
    assert engine.models.learner.samples == 0 and engine.models.journal == []
    _replayed(clean, records[:400])
    assert store.applied == clean.applied and store.users == clean.users
    _replayed(store, records, engine=_restarted(store))
    _replayed(clean, records, engine=_restarted(clean))
    assert store.applied == clean.applied and store.users == clean.users
    assert _learned(store) == _learned(clean) - _learned(first) > 0


def _restarted(store: MemoryStateStore) -> TierEngine:
    """The engine a restart on ``store`` builds, as the service's (its model and own
    contribution read)."""
    raw, own = store.get_model(), store.get_contribution("local")
    return load_engine(
        DEFAULT_TIERS_FILE,
        model=stored_model(raw) if raw else None,
        contribution=orjson.loads(own) if own else None,
    )
