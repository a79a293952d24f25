"""Forgetting a user in the batch step (no server): the user's events before the request
are erased with them, an ``erased`` change and a tombstone are published, and an event
after it starts a new lifetime (issue 8, forget)."""

from __future__ import annotations

import orjson

from consumer.service.records import InputRecord, OutputRecord, unpack_outbox
from consumer.service.state_store import MemoryStateStore
from consumer.service.tier_config import DEFAULT_TIERS_FILE, load_engine
from consumer.tools.replay import Replay, replay
from online_models.features import DAY_MS
from online_models.state_codec import state_json
from schemas import validator

T0 = 1_767_225_600_000


def event(offset: int, user: str, day: float, amount: float = 70.0) -> InputRecord:
    body = {
        "event_id": f"{user}-{offset}",
        "user_id": user,
        "event_type": "purchase",
        "timestamp": T0 + round(day * DAY_MS),
        "amount": amount,
    }
    return InputRecord("in", 0, offset, None, user.encode(), orjson.dumps(body))


def forget(offset: int, user: str, key: bytes | None = None) -> InputRecord:
    body = {
        "tierstream_control": "forget",
        "user_id": user,
        "request_id": "req-1",
        "requested_at": "2026-02-01T00:00:00Z",
    }
    return InputRecord("in", 0, offset, None, key or user.encode(), orjson.dumps(body))


def by_topic(outputs: list[OutputRecord], topic: str) -> list[OutputRecord]:
    return [o for o in outputs if o.topic == topic]


def test_forget_erases_the_user_and_a_later_event_starts_a_new_lifetime() -> None:
    records = [event(0, "u1", 0), event(1, "u1", 1), event(2, "u2", 1)]
    records += [forget(3, "u1"), event(4, "u1", 40, 5.0)]
    outputs, store = replay(records, load_engine(DEFAULT_TIERS_FILE, frozen=True), batch_size=2)
    changes = [orjson.loads(o.value or b"") for o in by_topic(outputs, "user-tier-changes")]
    u1 = [c for c in changes if c["user_id"] == "u1"]
    kinds = [c["reason"]["kind"] for c in u1]
    assert kinds[0] == "first_tier" and "erased" in kinds and kinds[-1] == "first_tier"
    erased = u1[kinds.index("erased")]
    assert erased["tier"] is None and erased["scores"] == {}
    assert erased["reason"]["request_id"] == "req-1"
    assert erased["event_time"] == "2026-02-01T00:00:00.000Z"
    assert erased["seq"] == u1[kinds.index("erased") - 1]["seq"] + 1
    after = u1[-1]
    assert after["seq"] == 1 and after["lifetime_start"] != u1[0]["lifetime_start"]
    assert after["event_id"] not in {c["event_id"] for c in u1[:-1]}
    for c in changes:
        validator("tier-change.v4").validate(c)
    # u1's current tier, the tombstone, then the new lifetime's current tier
    current = [(o.key, o.value and orjson.loads(o.value)) for o in by_topic(outputs, "user-tiers")]
    mine = [v for k, v in current if k == b"u1"]
    assert [v and v["seq"] for v in mine] == [1, None, 1]
    assert mine[-1]["last_event_id"] == after["event_id"]
    for _, v in current:
        if v is not None:
            validator("user-tier.v1").validate(v)
    state = state_json(store.users["u1"])
    assert state["features"]["events"] == 1 and state["features"]["total_spend"] == 5.0


def test_a_forgotten_user_leaves_nothing_in_the_store() -> None:
    engine = load_engine(DEFAULT_TIERS_FILE, frozen=True)
    rep = Replay(engine, emit=lambda _: None)
    rep.run([event(0, "u1", 0), event(1, "u2", 0), forget(2, "u1")])
    rep.advance_watermark(T0 + 30 * DAY_MS)
    store = rep.store
    assert isinstance(store, MemoryStateStore)
    assert "u1" not in store.users and "u2" in store.users
    assert all("u1" not in t for t in store.timers.values())
    pending = [r for out in store.outboxes.values() for e in out for r in unpack_outbox(e)]
    assert not any(b"u1" in (r.key or b"") + (r.value or b"") for r in pending)


def test_forgetting_an_unknown_user_publishes_only_the_tombstone() -> None:
    outputs, store = replay([forget(0, "nobody")], load_engine(DEFAULT_TIERS_FILE))
    assert outputs == [OutputRecord("user-tiers", b"nobody", None)]
    assert store.users == {}


def test_a_forget_request_keyed_by_another_user_is_dead_lettered() -> None:
    outputs, store = replay(
        [event(0, "u1", 0), forget(1, "u1", key=b"u2")], load_engine(DEFAULT_TIERS_FILE)
    )
    dead = [orjson.loads(o.value or b"") for o in by_topic(outputs, "user-events-dlq")]
    assert [d["reason"] for d in dead] == ["key_mismatch"]
    assert "u1" in store.users
