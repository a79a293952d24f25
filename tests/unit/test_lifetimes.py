"""A user whose state expired (or was erased) and who comes back starts a new lifetime:
``seq`` starts at 1 again, and no ``event_id`` repeats one of an earlier lifetime, so a
subscriber that drops duplicates by ``event_id`` does not drop the new changes (issue 8,
item 8)."""

from __future__ import annotations

import orjson

from consumer.service.records import InputRecord, OutputRecord
from consumer.service.state_store import MemoryStateStore
from consumer.service.tier_config import DEFAULT_TIERS_FILE, load_engine
from consumer.tools.replay import replay
from online_models.engine import TierEngine
from online_models.features import DAY_MS
from schemas import validator

T0 = 1_767_225_600_000


def purchase(n: int, day: float, amount: float = 40.0) -> InputRecord:
    body = {
        "event_id": f"e{n}",
        "user_id": "u1",
        "event_type": "purchase",
        "timestamp": T0 + round(day * DAY_MS),
        "amount": amount,
    }
    return InputRecord("in", 0, n, None, b"u1", orjson.dumps(body))


def changes(outputs: list[OutputRecord]) -> list[dict[str, object]]:
    return [orjson.loads(o.value) for o in outputs if o.topic == "user-tier-changes"]


def test_a_user_who_comes_back_after_expiry_gets_new_event_ids() -> None:
    def engine() -> TierEngine:
        return load_engine(DEFAULT_TIERS_FILE, frozen=True, state_ttl_days=200)

    store = MemoryStateStore()
    first, store = replay([purchase(i, i * 0.1, 80.0) for i in range(6)], engine(), store=store)
    # Silent past the state's time-to-live (200 days here): the first event back fires
    # the timer that ends the old lifetime (a tombstone on the current-tier topic), then
    # starts a new one.
    back = [purchase(10 + i, 300 + i * 0.1, 80.0) for i in range(6)]
    second, store = replay(back, engine(), store=store)
    life = changes(first)[0]["lifetime_start"]
    before = changes(first) + [c for c in changes(second) if c["lifetime_start"] == life]
    after = [c for c in changes(second) if c["lifetime_start"] != life]
    tiers = [o.value for o in second if o.topic == "user-tiers"]
    end = tiers.index(None)  # after the old lifetime's inactivity re-scores
    assert orjson.loads(tiers[end - 1] or b"")["lifetime_start"] == before[0]["lifetime_start"]
    assert orjson.loads(tiers[end + 1] or b"")["seq"] == 1 and tiers.count(None) == 1
    assert before and after
    assert after[0]["seq"] == 1 and after[0]["previous_tier"] is None
    assert {c["event_id"] for c in before}.isdisjoint({c["event_id"] for c in after})
    assert before[0]["lifetime_start"] == "2026-01-01T00:00:00.000Z"
    assert after[0]["lifetime_start"] != before[0]["lifetime_start"]
    for c in before + after:
        validator("tier-change.v4").validate(c)


def test_the_same_lifetime_gives_the_same_ids_on_a_replay() -> None:
    records = [purchase(i, i * 0.5, 60.0) for i in range(8)]
    a, _ = replay(records, load_engine(DEFAULT_TIERS_FILE, frozen=True))
    b, _ = replay(records, load_engine(DEFAULT_TIERS_FILE, frozen=True), batch_size=3)
    assert [c["event_id"] for c in changes(a)] == [c["event_id"] for c in changes(b)]
