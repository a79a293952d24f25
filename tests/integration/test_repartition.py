"""The input topic grows from 2 to 4 partitions (issue 9): the service refuses the new
count with one line, `tierstream state repartition` moves the users routed elsewhere,
and after more events (keyed: some users now land on the new partitions) the state is
what a clean in-memory run gives when it makes the same move at the same point, and each
partition's tier population counts the users living there (issue 10).

The clean run: the records of before the move (by partition and offset), then, in memory,
each timer moved to its user's new partition and the new partitions' watermarks set to
the largest old one (the users' states are kept by user id there: nothing to move), then
the records of after. A frozen model: each user's result depends only on their own
events, in order, and the watermarks of the partitions they lived in.
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from consumer.demo.synthetic import GeneratorConfig, generate
from consumer.service.errors import UserError
from consumer.service.kafka_io import produce_records
from consumer.service.partitioning import partition_of
from consumer.service.records import InputRecord
from consumer.service.redis_store import RedisStateStore
from consumer.service.state_store import MemoryStateStore, SaveSet
from consumer.service.tier_config import DEFAULT_TIERS_FILE, load_engine
from consumer.tools.legacy_layout import LegacyMigration
from consumer.tools.repartition import Repartition
from consumer.tools.replay import Replay
from online_models.engine import Horizons
from online_models.event import Event
from online_models.features import DAY_MS
from online_models.global_model import GlobalModel
from online_models.state_codec import state_json
from online_models.user_state import UserState
from tests.integration.support import (
    KAFKA,
    REDIS,
    Names,
    cli,
    end_offsets,
    grow_topic,
    populations,
    read_topic,
    stored_users,
)

pytestmark = pytest.mark.integration

BEFORE = GeneratorConfig(users=200, events=4000, seed=81, days=40)
AFTER = GeneratorConfig(
    users=200, events=3000, seed=82, days=30, start=datetime(2026, 2, 15, tzinfo=UTC)
)


def move_in_memory(store: MemoryStateStore, topic: str, old: int, new: int) -> None:
    """What the repartition does, on a memory store (states are kept by user id there)."""
    for p in range(old):
        timers = store.timers.get((topic, p), {})
        for user, due in list(timers.items()):
            q = partition_of(user, new)
            if q != p:
                store.timers.setdefault((topic, q), {})[user] = due
                del timers[user]
    top = max(store.watermarks[(topic, p)] for p in range(old))
    for q in range(old, new):
        store.watermarks[(topic, q)] = top


def test_a_grown_topic_is_refused_then_repartitioned(
    names: Names, trained_model: GlobalModel, trained_model_file: Path
) -> None:
    env = names.env(TIERSTREAM_MODEL_FILE=str(trained_model_file))
    produce_records(KAFKA, names.input, ((r.key, r.value) for r in generate(BEFORE)), partitions=2)
    first = cli("run", "--stop-when-idle", "3", env=env)
    assert first.returncode == 0, first.stderr
    before = end_offsets(names.input)

    grow_topic(names.input, 4)
    refused = cli("run", "--stop-when-idle", "3", env=env)
    assert refused.returncode == 2, refused.stderr
    errors = [line for line in refused.stderr.splitlines() if line.startswith("tierstream:")]
    assert len(errors) == 1, refused.stderr
    assert re.search(r"has 4 partitions, but the state .* was written for 2", errors[0])
    assert "tierstream state repartition" in errors[0]

    dry = cli("state", "repartition", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    planned = re.search(r"would move (\d+) of (\d+) users", dry.stderr)
    assert planned and 0 < int(planned.group(1)) < int(planned.group(2)), dry.stderr
    assert dry.stderr.count("partition ") >= 2  # one progress line per old partition
    moved = cli("state", "repartition", env=env)
    assert moved.returncode == 0, moved.stderr
    assert f"moved {planned.group(1)} of {planned.group(2)} users" in moved.stderr
    again = cli("state", "repartition", env=env)
    assert again.returncode == 0 and "already laid out for 4" in again.stderr

    produce_records(KAFKA, names.input, ((r.key, r.value) for r in generate(AFTER)), partitions=4)
    last = cli("run", "--stop-when-idle", "3", env=env)
    assert last.returncode == 0, last.stderr

    records = read_topic(names.input)
    for r in records:  # where Kafka routed each record is where the tools look
        count = 2 if r.offset < before.get(r.partition, 0) else 4
        assert r.key and r.partition == partition_of(r.key.decode(), count)
    old = sorted((r for r in records if r.offset < before.get(r.partition, 0)), key=_order)
    new = sorted((r for r in records if r.offset >= before.get(r.partition, 0)), key=_order)
    movers = {u.decode() for u in {r.key for r in old} & {r.key for r in new} if u}
    movers = {u for u in movers if partition_of(u, 2) != partition_of(u, 4)}
    assert movers, "the test stream should have users whose later events moved partition"

    outputs, store = _clean_run(names, trained_model, old, new)
    assert stored_users(names.prefix, sorted(store.users)) == store.users
    counted, found = populations(names.prefix, names.input)
    assert counted == found and len(found) == 4 and all(found.values())
    published: dict[str, list[dict[str, object]]] = defaultdict(list)
    seen: set[str] = set()
    for rec in read_topic(names.output):
        body = orjson.loads(rec.value or b"")
        if body["event_id"] not in seen:
            seen.add(body["event_id"])
            body.pop("emitted_at")
            published[body["user_id"]].append(body)
    expected: dict[str, list[dict[str, object]]] = defaultdict(list)
    for out in outputs:
        if out.topic == names.output and out.value:
            body = orjson.loads(out.value)
            body.pop("emitted_at")
            expected[body["user_id"]].append(body)
    assert published == expected


def _order(r: InputRecord) -> tuple[int, int]:
    return r.partition, r.offset


def _clean_run(
    names: Names, model: GlobalModel, old: list[InputRecord], new: list[InputRecord]
) -> tuple[list[object], MemoryStateStore]:
    store = MemoryStateStore()
    outputs: list[object] = []
    replay = Replay(
        load_engine(DEFAULT_TIERS_FILE, model=model, frozen=True),
        store,
        emit=outputs.append,
        output_topic=names.output,
        dlq_topic=names.dlq,
    )
    replay.run(old)
    move_in_memory(store, names.input, 2, 4)
    replay.run(new)
    return outputs, store


class _Crash(Exception):
    """The repartition stops here, as if killed."""


TIERS = ("casual", "engaged", "vip")


def _state(user: str, i: int, *, due_ms: int | None = None) -> bytes:
    """A user's stored state: one event, in one of three tiers, its timer due at 1000 + i
    (``due_ms``: another time; -1 none, as a version that let Redis expire states left
    a user silent for a year)."""
    state = UserState.new()
    state.features.apply(Event(f"{user}-e", user, "login", 1000 + i))
    state.tier, state.seq = TIERS[i % 3], 1
    state.due_ms = 1000 + i if due_ms is None else due_ms
    if due_ms == -1:  # its timers stopped: the last re-score was before max_silence
        state.rescored_ms = 1000 + i + 364 * DAY_MS
    return orjson.dumps(state.to_json())


def _seeded(prefix: str, users: list[str]) -> RedisStateStore:
    """A state of ``users`` on 2 partitions of topic "events", each with a timer, counted
    by tier, the watermarks at 100 and 200."""
    store = RedisStateStore(REDIS, prefix=prefix)
    store.record_partition_count("events", 2)
    parts = [("events", 0), ("events", 1)]
    store.acquire(parts)
    txn = store.begin(parts)
    txn.load({}, {})
    batch = SaveSet()
    for i, u in enumerate(users):
        write = batch.at(("events", partition_of(u, 2)))
        write.states[u] = _state(u, i)
        write.timers_set[u] = 1000 + i
        population = write.counts.population
        population[TIERS[i % 3]] = population.get(TIERS[i % 3], 0) + 1
    batch.at(parts[0]).watermark, batch.at(parts[1]).watermark = 100, 200
    txn.save_partitions(batch)
    return store


def _layout(store: RedisStateStore, users: list[str], n: int) -> dict[str, object]:
    keys, r = store.keys, store.client
    where = {}
    for u in users:
        homes = [p for p in range(n) if r.exists(keys.user("events", p, u))]
        timers = [p for p in range(n) if r.zscore(keys.timers("events", p), u) is not None]
        where[u] = (homes, timers)
    return where


def _by_tier(users: list[str], n: int) -> dict[int, dict[str, int]]:
    """Per partition of ``n``, its users by tier (user i is in ``TIERS[i % 3]``)."""
    found: dict[int, dict[str, int]] = {p: {} for p in range(n)}
    for i, u in enumerate(users):
        tiers = found[partition_of(u, n)]
        tiers[TIERS[i % 3]] = tiers.get(TIERS[i % 3], 0) + 1
    return found


def test_a_repartition_stopped_halfway_is_run_again(
    names: Names, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = [f"user-{i}" for i in range(300)]
    store = _seeded(names.prefix, users)
    mover = Repartition(store, "events", 5)
    copy = Repartition._copy_then_delete
    calls = 0

    def crash_after_copying(self: Repartition, p: int, rows: list[Any]) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:  # the second old partition: its new keys written, the old ones not
            writes = self.redis.pipeline(transaction=False)
            for u, q, value, ttl_ms in rows:
                writes.set(
                    self.keys.user(self.topic, q, u), value, px=ttl_ms if ttl_ms > 0 else None
                )
            writes.execute()
            raise _Crash
        copy(self, p, rows)

    monkeypatch.setattr(Repartition, "_copy_then_delete", crash_after_copying)
    with pytest.raises(_Crash):
        mover.run()
    assert store.partition_counts() == {"events": 2}  # nothing recorded: run it again
    monkeypatch.setattr(Repartition, "_copy_then_delete", copy)
    report = Repartition(store, "events", 5).run()
    assert store.partition_counts() == {"events": 5}
    want = {u: ([partition_of(u, 5)], [partition_of(u, 5)]) for u in users}
    assert _layout(store, users, 5) == want
    assert store.get_users(users) == {u: _state(u, i) for i, u in enumerate(users)}
    # the tier populations follow the users: each partition counts the ones living there
    counted = store.tier_counts([("events", p) for p in range(5)])
    assert {tp[1]: {t: k for t, k in c.population.items() if k} for tp, c in counted.items()} == (
        _by_tier(users, 5)
    )
    assert report.counted is not None and report.counted.users == len(users)
    marks = store.get_many([store.keys.watermark("events", p) for p in range(5)])
    assert marks == [b"100", b"200", b"200", b"200", b"200"] and report.watermark == 200
    assert Repartition(store, "events", 5).run().moved == 0
    store.close()


def test_a_repartition_refuses_pending_outputs_and_users_stored_twice(names: Names) -> None:
    users = [f"user-{i}" for i in range(50)]
    store = _seeded(names.prefix, users)
    store.client.rpush(store.keys.outbox("events", 1), b"unpublished")
    with pytest.raises(UserError, match=r"outputs of partitions 1 \(1\) of events"):
        Repartition(store, "events", 4).run()
    store.client.delete(store.keys.outbox("events", 1))
    mover = next(u for u in users if partition_of(u, 4) != partition_of(u, 2))
    store.client.set(store.keys.user("events", partition_of(mover, 4), mover), b"applied late")
    with pytest.raises(UserError, match=f"1 users have different states .*'{mover}'"):
        Repartition(store, "events", 4).run()
    assert store.partition_counts() == {"events": 2}
    assert store.client.get(store.keys.user("events", partition_of(mover, 2), mover))
    store.close()


def test_a_state_in_the_old_layout_is_moved_into_the_new_one(names: Names) -> None:
    """Keys as tierstream wrote them before the partitioned layout, moved in place; run
    again, nothing changes. The users are counted by tier; their states lose the Redis
    time-to-live that version gave them (the engine ends silent users now), and one whose
    timers had stopped gets the timer that ends it; a state that cannot be read is not
    counted, and keeps its time-to-live."""
    store = RedisStateStore(REDIS, prefix=names.prefix)
    r, p = store.client, names.prefix
    users = [f"user-{i}" for i in range(40)]
    states = {u: _state(u, i, due_ms=-1 if i < 10 else None) for i, u in enumerate(users)}
    broken = users[30:]
    for u in broken:
        states[u] = f"state of {u}".encode()
    for i, u in enumerate(users):
        r.set(f"{p}:{{u:{u}}}", states[u], ex=3000)
        if i >= 10:
            r.zadd(f"{p}:timers:events:{partition_of(u, 2)}", {u: 1000 + i})
    for n in (0, 1):
        r.mset(
            {
                f"{p}:applied:events:{n}": 10 + n,
                f"{p}:epoch:events:{n}": 5,
                f"{p}:wm:events:{n}": 90 + n,
            }
        )
    r.rpush(f"{p}:outbox:events:1", b"unpublished")
    r.set(f"{p}:model", b"the model")
    r.set(f"{p}:contrib:pod-0", b"learned")
    r.sadd(f"{p}:contributors", "pod-0")

    report = LegacyMigration(store, "events", 2, horizons=Horizons()).run()
    assert (report.users, report.timers, report.outputs, report.models) == (40, 30, 1, 2)
    again = LegacyMigration(store, "events", 2).run()
    assert (again.users, again.timers, again.outputs, again.models) == (0, 0, 0, 0)

    parts = [("events", 0), ("events", 1)]
    assert store.partition_counts() == {"events": 2}
    assert store.populations_counted("events")
    counted = store.tier_counts(parts)
    assert {tp[1]: {t: k for t, k in c.population.items() if k} for tp, c in counted.items()} == (
        _by_tier(users[:30], 2)
    )
    armed = {u: state_json(v or b"")["due_ms"] for u, v in store.get_users(users[:10]).items()}
    assert armed == {u: 1000 + i + Horizons().expire_after_ms for i, u in enumerate(users[:10])}
    assert store.get_users(users[10:]) == {u: states[u] for u in users[10:]}

    def ttl(u: str) -> int:
        return int(r.ttl(store.keys.user("events", partition_of(u, 2), u)))

    assert all(ttl(u) == -1 for u in users[:30]) and all(2900 < ttl(u) <= 3000 for u in broken)
    assert store.applied_offsets(parts) == {parts[0]: 10, parts[1]: 11}
    assert store.epochs(parts) == {parts[0]: 5, parts[1]: 5}
    assert store.watermark() == 91 and store.outbox(parts[1]) == [b"unpublished"]
    store.acquire(parts)
    loaded = store.begin(parts).load({}, {parts[0]: 10**15, parts[1]: 10**15})
    assert sorted(u for entries in loaded.timers.values() for _, u in entries) == sorted(users)
    assert loaded.model == b"the model" and loaded.contributions == {"pod-0": b"learned"}
    left = sorted(k.decode() for k in r.scan_iter(match=f"{p}:*") if b"{" + p.encode() not in k)
    assert left == [], left  # no old key is left
    store.close()
