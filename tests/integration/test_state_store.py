"""The state store's protocol (:mod:`tests.integration.store_contract`) against the real
single Redis server of the local stack (`make stack-up`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis
from redis.connection import AbstractConnection

from consumer.service.redis_store import RedisStateStore
from consumer.service.state_store import PartitionWrite, SaveSet
from tests.integration.store_contract import *  # noqa: F403  (the contract's tests)
from tests.integration.store_contract import MakeStore
from tests.integration.support import REDIS, Names

pytestmark = pytest.mark.integration


@pytest.fixture
def make_store(names: Names) -> Iterator[MakeStore]:
    stores: list[RedisStateStore] = []

    def make() -> RedisStateStore:
        store = RedisStateStore(REDIS, prefix=names.prefix)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


def test_on_one_server_a_batch_watches_and_writes_its_partitions_at_once(
    make_store: MakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A single Redis server holds every key: one WATCH and one MULTI/EXEC for all the
    batch's partitions, one script call for all their trims (Redis Cluster needs one of
    each per slot); the learning is one script call, no WATCH. Counted as the client's
    round trips (each a send on a connection)."""
    store = make_store()
    assert isinstance(store, RedisStateStore) and store.one_server
    parts = [("events", p) for p in range(4)]
    store.acquire(parts)
    batch = SaveSet({tp: PartitionWrite({"u": b"s"}, applied=1, outbox=[b"o"]) for tp in parts})

    def round_trips(step: Callable[[], object]) -> int:
        sends: list[object] = []
        original = AbstractConnection.send_packed_command

        def counted(conn: AbstractConnection, command: object, check_health: bool = True) -> None:
            sends.append(command)
            original(conn, command, check_health)

        with monkeypatch.context() as patch:
            patch.setattr(AbstractConnection, "send_packed_command", counted)
            step()
        return len(sends)

    learning = SaveSet(contribution=("me", b"learned"))
    for _ in range(3):  # the first opens the connections and loads the scripts
        txn = store.begin(parts)
        load = round_trips(lambda: txn.load({tp: ["u"] for tp in parts}, {}))  # noqa: B023
        save = round_trips(lambda: txn.save_partitions(batch))  # noqa: B023
        learned = round_trips(lambda: txn.save_learning(learning))  # noqa: B023
        trims = round_trips(lambda: store.clear_outboxes(dict.fromkeys(parts, 1)))
    # The load: the partitions' WATCH, then the reads (the contributions among them).
    assert (load, save, learned, trims) == (2, 1, 1, 1)
    assert store.get_contribution("me") == b"learned"
    assert all(store.outbox(tp) == [] for tp in parts)
    assert store.applied_offsets(parts) == dict.fromkeys(parts, 1)


def test_a_contributor_whose_contribution_is_gone_does_not_block_new_versions(
    make_store: MakeStore,
) -> None:
    """A member of the contributors set whose contribution key is gone (deleted by
    hand, or by an older version's cleanup) folds nothing, and a new version drops it:
    else every new version would wait for a contribution that never comes, and the
    model would stop advancing."""
    store = make_store()
    assert isinstance(store, RedisStateStore)
    store.acquire([("events", 0)])
    raw = redis.Redis.from_url(REDIS)
    try:
        raw.sadd(store.keys.contributors, "gone")
        txn = store.begin([("events", 0)])
        assert txn.load({("events", 0): []}, {}).contributions == {}
        assert txn.save_learning(SaveSet(model=b"v1", contribution=("me", b"learned")))
        assert store.get_model() == b"v1" and store.get_contribution("me") == b"learned"
        assert raw.smembers(store.keys.contributors) == {b"me"}
    finally:
        raw.close()
