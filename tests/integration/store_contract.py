"""The state store's protocol, as every store must keep it (memory, and each Redis
deployment form: a single server, Redis Cluster, Sentinel): epochs and fencing, the
guarded outbox trim, the load and the per-partition save, the tier counts written with
the states, the learning's compare-and-set, users found by the recorded partition count.
A test module imports these and provides ``make_store``: a factory of store handles on
one fresh store (a Redis key prefix, or one memory), each handle an instance of its own.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from consumer.service.errors import Fenced
from consumer.service.partitioning import partition_of
from consumer.service.redis_store import RedisStateStore
from consumer.service.state_store import MemoryStateStore, PartitionWrite, SaveSet
from consumer.service.tier_counts import TierCounts

Store = RedisStateStore | MemoryStateStore
MakeStore = Callable[[], Store]
A, B = ("events", 0), ("events", 1)


def forget_counted(store: Store, topic: str, partitions: int) -> None:
    """Make ``topic``'s state look written by a version that did not count populations:
    its partition count recorded, the topic not marked counted."""
    if isinstance(store, MemoryStateStore):
        store.partitions[topic] = partitions
    else:
        store.client.hset(store.keys.partitions, topic, partitions)


def test_each_acquire_raises_the_epoch_and_fences_the_one_before(
    make_store: MakeStore,
) -> None:
    first, second = make_store(), make_store()
    assert first.acquire([A, B]) == {A: 1, B: 1}
    first.check_owner([A, B])
    assert second.acquire([B]) == {B: 2}
    first.check_owner([A])
    with pytest.raises(Fenced):
        first.check_owner([B])
    assert first.epochs([A, B]) == {A: 1, B: 2}
    first.release([B])
    assert first.held() == {A: 1}


def test_a_batch_saves_what_it_loaded_per_partition(make_store: MakeStore) -> None:
    store = make_store()
    store.acquire([A, B])
    txn = store.begin([A, B])
    loaded = txn.load({A: ["u1"], B: ["u2"]}, {A: 100})
    assert loaded.states == {A: {"u1": None}, B: {"u2": None}}
    assert loaded.applied == {A: -1, B: -1} and loaded.watermarks == {A: -1, B: -1}
    batch = SaveSet(
        {
            A: PartitionWrite(
                {"u1": b"one"},
                applied=7,
                watermark=50,
                outbox=[b"o1", b"o2"],
                timers_set={"u1": 60},
            ),
            B: PartitionWrite({"u2": b"two"}, applied=3, quiet_states={"ghost": b"x"}),
        },
        model=b"model",
        contribution=("me", b"learned"),
    )
    txn.save_partitions(batch)
    assert txn.save_learning(batch) is True

    again = store.begin([A, B]).load({A: ["u1"], B: ["u2", "ghost"]}, {A: 60, B: 60})
    assert again.states == {A: {"u1": b"one"}, B: {"u2": b"two", "ghost": None}}
    assert again.applied == {A: 7, B: 3} and again.watermarks == {A: 50, B: -1}
    assert again.timers == {A: [(60, "u1")], B: []}
    assert again.model == b"model" and again.contributions == {"me": b"learned"}
    assert store.outbox(A) == [b"o1", b"o2"] and store.outbox(B) == []
    store.clear_outbox(A, 1)
    assert store.outbox(A) == [b"o2"]


def test_a_timer_alone_never_recreates_a_deleted_state_and_forget_deletes(
    make_store: MakeStore,
) -> None:
    store = make_store()
    store.acquire([A])
    txn = store.begin([A])
    txn.load({A: ["u1", "u2"]}, {})
    txn.save_partitions(SaveSet({A: PartitionWrite({"u1": b"1", "u2": b"2"}, applied=1)}))
    txn = store.begin([A])
    txn.load({A: ["u1", "u2"]}, {})
    write = PartitionWrite(quiet_states={"u1": b"1'", "u3": b"3"}, deleted_users=["u2"])
    txn.save_partitions(SaveSet({A: write}))
    got = store.begin([A]).load({A: ["u1", "u2", "u3"]}, {}).states[A]
    assert got == {"u1": b"1'", "u2": None, "u3": None}


def test_a_zombie_writes_nothing_and_cannot_trim(make_store: MakeStore) -> None:
    zombie, owner = make_store(), make_store()
    zombie.acquire([A])
    txn = zombie.begin([A])
    txn.load({A: ["u1"]}, {})
    owner.acquire([A])  # the group gave the partition to another instance
    owner_txn = owner.begin([A])
    owner_txn.load({A: []}, {})
    owner_txn.save_partitions(SaveSet({A: PartitionWrite(applied=5, outbox=[b"new"])}))
    with pytest.raises(Fenced):
        txn.save_partitions(SaveSet({A: PartitionWrite({"u1": b"old"}, applied=9)}))
    with pytest.raises(Fenced):
        zombie.clear_outbox(A, 1)
    with pytest.raises(Fenced):
        zombie.begin([A]).load({A: ["u1"]}, {})
    assert owner.outbox(A) == [b"new"]
    assert owner.applied_offsets([A]) == {A: 5}
    assert owner.begin([A]).load({A: ["u1"]}, {}).states[A] == {"u1": None}


def test_a_fenced_partition_is_not_saved_nor_any_after_it_nor_the_learning(
    make_store: MakeStore,
) -> None:
    """Partition by partition, the ones before the fenced one are saved (and reported
    written); where a store writes a batch's partitions in one transaction (Redis on one
    server), none is. Either way what is reported written is what is stored."""
    mine, other = make_store(), make_store()
    mine.acquire([A, B])
    txn = mine.begin([A, B])
    txn.load({A: ["u1"], B: ["u2"]}, {})
    other.acquire([B])
    batch = SaveSet(
        {A: PartitionWrite({"u1": b"1"}, applied=1), B: PartitionWrite({"u2": b"2"}, applied=1)},
        contribution=("me", b"learned"),
    )
    written: list[tuple[str, int]] = []
    with pytest.raises(Fenced):
        txn.save_partitions(batch, written.append)
    together = isinstance(mine, RedisStateStore) and mine.one_server
    assert written == ([] if together else [A])
    assert mine.applied_offsets([A, B]) == {A: None if together else 1, B: None}
    assert mine.get_contribution("me") is None


def test_outboxes_are_trimmed_where_the_epoch_is_held_and_the_others_named(
    make_store: MakeStore,
) -> None:
    mine, other = make_store(), make_store()
    mine.acquire([A, B])
    txn = mine.begin([A, B])
    txn.load({}, {})
    txn.save_partitions(
        SaveSet(
            {
                A: PartitionWrite(applied=1, outbox=[b"a1", b"a2"]),
                B: PartitionWrite(applied=1, outbox=[b"b1", b"b2"]),
            }
        )
    )
    mine.clear_outboxes({A: 1, B: 1})
    assert mine.outbox(A) == [b"a2"] and mine.outbox(B) == [b"b2"]
    other.acquire([A])  # A has another owner now
    with pytest.raises(Fenced, match="events"):
        mine.clear_outboxes({A: 1, B: 1})
    assert mine.outbox(A) == [b"a2"] and mine.outbox(B) == []


def test_each_load_reads_the_contributions_as_they_are_now(make_store: MakeStore) -> None:
    """Contributions come and go and change between loads (a Redis store reads those of
    the instances it saw contributing at its last load early: the guess must never
    stand in for what is stored)."""
    mine, other = make_store(), make_store()
    mine.acquire([A])
    other.acquire([B])

    def contributions() -> dict[str, bytes]:
        txn = mine.begin([A])
        loaded = txn.load({A: []}, {})
        txn.abort()
        return loaded.contributions

    def contribute(value: bytes | None, drop: tuple[str, ...] = ()) -> None:
        txn = other.begin([B])
        txn.load({B: []}, {})
        learned = None if value is None else ("other", value)
        assert txn.save_learning(SaveSet(contribution=learned, drop_contributions=drop))

    assert contributions() == {}
    contribute(b"c1")
    assert contributions() == {"other": b"c1"}
    contribute(b"c2")
    assert contributions() == {"other": b"c2"}
    contribute(None, drop=("other",))
    assert contributions() == {}
    contribute(b"c3")
    assert contributions() == {"other": b"c3"}


def test_learning_is_a_compare_and_set_on_the_model(make_store: MakeStore) -> None:
    one, two = make_store(), make_store()
    one.acquire([A])
    two.acquire([B])
    t1, t2 = one.begin([A]), two.begin([B])
    t1.load({A: []}, {})
    t2.load({B: []}, {})
    assert t2.save_learning(SaveSet(model=b"v2 by two", contribution=("two", b"c2")))
    assert t1.save_learning(SaveSet(model=b"v2 by one", contribution=("one", b"c1"))) is False
    assert one.get_model() == b"v2 by two"
    assert one.get_contribution("one") is None and one.get_contribution("two") == b"c2"
    # Over a stored model too: each loads v2, two writes v3 first.
    t1, t2 = one.begin([A]), two.begin([B])
    assert t1.load({A: []}, {}).model == t2.load({B: []}, {}).model == b"v2 by two"
    assert t2.save_learning(SaveSet(model=b"v3 by two", contribution=("two", b"c3")))
    assert t1.save_learning(SaveSet(model=b"v3 by one", contribution=("one", b"c1"))) is False
    assert one.get_model() == b"v3 by two"
    t1 = one.begin([A])
    t1.load({A: []}, {})
    v4 = SaveSet(model=b"v4 by one", contribution=("one", b"c1"), drop_contributions=["two"])
    assert t1.save_learning(v4)
    assert two.get_model() == b"v4 by one" and two.get_contribution("one") == b"c1"
    assert two.get_contribution("two") is None


def test_a_new_version_folds_every_other_contribution_as_loaded(make_store: MakeStore) -> None:
    """A new version replaces the contributions it folds: it is written only if each is
    still the one its batch loaded and no other instance contributed since. Otherwise an
    instance that saved more learning in between lost it (its newer contribution
    deleted, its older one folded); contributing alone is refused by none of that."""
    one, two, three = make_store(), make_store(), make_store()
    one.acquire([A])
    two.acquire([B])

    def contribute(store: Store, name: str, value: bytes) -> None:
        txn = store.begin([])  # the learning alone
        txn.load({}, {})
        assert txn.save_learning(SaveSet(contribution=(name, value)))

    contribute(two, "two", b"c1")
    t1 = one.begin([A])
    assert t1.load({A: []}, {}).contributions == {"two": b"c1"}
    contribute(two, "two", b"c2")  # more of two's learning, saved after one's load
    v1 = SaveSet(model=b"v1", contribution=("one", b"o1"), drop_contributions=["two"])
    assert t1.save_learning(v1) is False
    assert one.get_model() is None and one.get_contribution("two") == b"c2"
    # Loaded again, the version folds c2 and replaces it.
    t1 = one.begin([A])
    assert t1.load({A: []}, {}).contributions == {"two": b"c2"}
    assert t1.save_learning(v1)
    assert one.get_contribution("two") is None and one.get_contribution("one") == b"o1"
    # An instance that first contributes after the load is not left out either.
    t1 = one.begin([A])
    assert t1.load({A: []}, {}).contributions == {"one": b"o1"}
    contribute(three, "three", b"t1")
    v2 = SaveSet(model=b"v2", contribution=("one", b"o2"))
    assert t1.save_learning(v2) is False
    assert one.get_model() == b"v1" and one.get_contribution("three") == b"t1"
    # A contribution alone goes over another instance's change (nothing is folded).
    t1 = one.begin([A])
    t1.load({A: []}, {})
    contribute(three, "three", b"t2")
    assert t1.save_learning(SaveSet(contribution=("one", b"o3")))
    assert one.get_contribution("one") == b"o3" and one.get_contribution("three") == b"t2"


def test_an_applied_offset_moved_meanwhile_fences_the_partition(make_store: MakeStore) -> None:
    """The partition's epoch and applied offset are what fence a batch (each user is not
    watched: whoever writes a partition's users holds its epoch and moves its offset)."""
    store = make_store()
    store.acquire([A])
    txn = store.begin([A])
    txn.load({A: ["u1"]}, {})
    other = store.begin([A])  # another batch of the same holder, saved in between
    other.load({A: ["u1"]}, {})
    other.save_partitions(SaveSet({A: PartitionWrite({"u1": b"theirs"}, applied=1)}))
    with pytest.raises(Fenced):
        txn.save_partitions(SaveSet({A: PartitionWrite({"u1": b"mine"}, applied=2)}))
    assert store.applied_offsets([A]) == {A: 1}
    assert store.begin([A]).load({A: ["u1"]}, {}).states[A] == {"u1": b"theirs"}


def test_timers_load_in_slices_with_their_users(make_store: MakeStore) -> None:
    store = make_store()
    store.max_timers = 3
    store.acquire([A])
    txn = store.begin([A])
    txn.load({}, {})
    due = {f"u{i}": 10 * (i // 2) for i in range(8)}  # two users per time
    states = {u: u.encode() for u in due}
    txn.save_partitions(SaveSet({A: PartitionWrite(states, applied=1, timers_set=due)}))
    loaded = store.begin([A]).load({A: ["u0"]}, {A: 100})
    assert loaded.timers[A] == [(0, "u0"), (0, "u1"), (10, "u2"), (10, "u3")]
    assert loaded.capped == {A: 10}
    assert loaded.states[A] == {u: u.encode() for u in ("u0", "u1", "u2", "u3")}


def test_a_batchs_partitions_share_one_timer_slice(make_store: MakeStore) -> None:
    """However many partitions a batch reads, it loads at most ``max_timers`` due timers
    in all, so the users it holds parsed do not grow with the partitions an instance
    owns: four partitions with six due timers each and ``max_timers`` 8 load two each,
    each partition capped at its second timer."""
    store = make_store()
    store.max_timers = 8
    parts = [("events", p) for p in range(4)]
    store.acquire(parts)
    txn = store.begin(parts)
    txn.load({}, {})
    writes = {}
    for tp in parts:
        due = {f"u{tp[1]}-{i}": 10 * i for i in range(6)}
        writes[tp] = PartitionWrite({u: b"s" for u in due}, applied=1, timers_set=due)
    txn.save_partitions(SaveSet(writes))
    loaded = store.begin(parts).load({}, {tp: 100 for tp in parts})
    assert sum(len(t) for t in loaded.timers.values()) == 8
    assert sum(len(s) for s in loaded.states.values()) == 8
    assert loaded.timers[parts[3]] == [(0, "u3-0"), (10, "u3-1")]
    assert loaded.capped == {tp: 10 for tp in parts}


def test_tools_find_a_user_by_the_recorded_partition_count(make_store: MakeStore) -> None:
    store = make_store()
    assert store.record_partition_count("events", 4) == 4
    assert store.record_partition_count("events", 8) == 4
    assert store.partition_counts() == {"events": 4}
    home = ("events", partition_of("alice", 4))
    store.acquire([home])
    txn = store.begin([home])
    txn.load({home: ["alice"]}, {})
    txn.save_partitions(SaveSet({home: PartitionWrite({"alice": b"a"}, applied=0, watermark=9)}))
    assert store.get_user("alice") == b"a" and store.get_user("bob") is None
    assert store.get_users(["alice", "bob"]) == {"alice": b"a", "bob": None}
    assert store.watermark() == 9


def test_tier_counts_move_with_the_states(make_store: MakeStore) -> None:
    store = make_store()
    store.acquire([A, B])
    txn = store.begin([A, B])
    assert txn.load({A: ["u1"]}, {}).populations == {A: {}, B: {}}
    first = SaveSet(
        {
            A: PartitionWrite(
                {"u1": b"1", "u2": b"2"},
                applied=1,
                counts=TierCounts({"vip": 2}, {"treated:converted:vip": 1}),
            ),
            B: PartitionWrite({"u3": b"3"}, applied=1, counts=TierCounts({"casual": 1})),
        }
    )
    txn.save_partitions(first)
    txn = store.begin([A, B])
    assert txn.load({A: ["u1"]}, {}).populations == {A: {"vip": 2}, B: {"casual": 1}}
    moved = PartitionWrite(
        {"u1": b"1'"},
        deleted_users=["u2"],
        applied=2,
        counts=TierCounts({"vip": -2, "casual": 1}, {"treated:converted:vip": 2}),
    )
    txn.save_partitions(SaveSet({A: moved}))
    got = store.tier_counts([A, B])
    assert got[A] == TierCounts({"vip": 0, "casual": 1}, {"treated:converted:vip": 3}) and got[
        B
    ] == TierCounts({"casual": 1}, {})


def test_a_fenced_partition_changes_no_count(make_store: MakeStore) -> None:
    zombie, owner = make_store(), make_store()
    zombie.acquire([A])
    txn = zombie.begin([A])
    txn.load({A: ["u1"]}, {})
    owner.acquire([A])
    with pytest.raises(Fenced):
        txn.save_partitions(
            SaveSet({A: PartitionWrite({"u1": b"1"}, applied=1, counts=TierCounts({"vip": 1}))})
        )
    assert owner.tier_counts([A]) == {A: TierCounts()}


def test_a_fresh_state_is_counted_from_the_start_an_old_one_is_not(
    make_store: MakeStore,
) -> None:
    store = make_store()
    assert store.record_partition_count("events", 2) == 2
    assert store.populations_counted("events")
    assert store.record_partition_count("events", 4) == 2 and store.populations_counted("events")
    forget_counted(store, "older", 3)
    assert store.record_partition_count("older", 3) == 3
    assert not store.populations_counted("older")
