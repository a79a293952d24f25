"""Records that once wedged or silently broke a partition (issue 8, items 1-3 and 6) are
dead-lettered with their reason, and the rest of the stream goes on as if they were not
there. No server: the batch step and commit protocol over a memory store."""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson
import pytest

from consumer.service.dead_letters import dead_letter
from consumer.service.records import InputRecord, OutputRecord
from consumer.service.state_store import MemoryStateStore
from consumer.service.tier_config import DEFAULT_TIERS_FILE, load_engine
from consumer.tools.replay import Replay, replay
from online_models.features import DAY_MS
from online_models.state_codec import state_json
from schemas import validator
from schemas.decode import Rejection

T0 = 1_767_225_600_000  # 2026-01-01
ENGINE_FILE = DEFAULT_TIERS_FILE


def body(
    user: str, n: int, t_ms: int | str, etype: str = "page_view", amount: float = 0.0
) -> bytes:
    event: dict[str, object] = {
        "event_id": f"{user}-{n}",
        "user_id": user,
        "event_type": etype,
        "timestamp": t_ms,
    }
    if etype in ("purchase", "refund"):
        event["amount"] = amount
    return orjson.dumps(event)


def records(values: list[tuple[bytes | None, bytes]], partition: int = 0) -> list[InputRecord]:
    return [InputRecord("in", partition, i, None, k, v) for i, (k, v) in enumerate(values)]


def dlq(outputs: list[OutputRecord]) -> list[dict[str, object]]:
    return [orjson.loads(o.value) for o in outputs if o.topic == "user-events-dlq"]


def changes(outputs: list[OutputRecord]) -> list[dict[str, object]]:
    return [orjson.loads(o.value) for o in outputs if o.topic == "user-tier-changes"]


def busy_stream(users: int = 20, days: int = 60) -> list[tuple[bytes | None, bytes]]:
    """Users active on day 0, then one user keeps event time moving for ``days``."""
    out: list[tuple[bytes | None, bytes]] = [
        (f"u{i}".encode(), body(f"u{i}", 0, T0, "purchase", 30.0)) for i in range(users)
    ]
    out += [(b"clock", body("clock", d, T0 + d * DAY_MS)) for d in range(1, days)]
    return out


def test_an_event_dated_in_the_year_9999_is_dead_lettered_and_time_goes_on() -> None:
    values = busy_stream()
    values.insert(21, (b"u3", body("u3", 99, "9999-12-31T23:59:59Z")))
    t0 = time.monotonic()
    outputs, store = replay(records(values), load_engine(ENGINE_FILE), batch_size=7)
    assert time.monotonic() - t0 < 20  # it once took minutes: every timer fired to 9999
    dead = dlq(outputs)
    assert [d["reason"] for d in dead] == ["future_timestamp"]
    assert "9999-12-31T23:59:59.000Z" in str(dead[0]["detail"])
    # the watermark stayed in 2026, so the silent users' timers still fire on time
    assert store.watermark() == T0 + 59 * DAY_MS
    fell = [c for c in changes(outputs) if c["reason"]["kind"] == "inactivity"]  # type: ignore[index]
    assert fell, "the partition's timers stopped firing"


def test_an_event_at_epoch_zero_is_dead_lettered() -> None:
    values = [(b"u1", body("u1", 1, 0)), (b"u1", body("u1", 2, "1999-12-31T23:59:59Z"))]
    values.append((b"u1", body("u1", 3, T0)))
    outputs, store = replay(records(values), load_engine(ENGINE_FILE))
    assert [d["reason"] for d in dlq(outputs)] == ["ancient_timestamp"] * 2
    assert state_json(store.users["u1"])["features"]["events"] == 1


def test_a_silent_user_ends_after_the_state_time_to_live() -> None:
    """Re-scores stop once the user has been silent for ``max_silence`` (365 days) and
    their last snapshot resolved (before, each label deadline armed the next one, for
    ever); the one timer left ends the user at the state's time-to-live (550 days): state,
    timer and tier population gone, a tombstone on the current-tier topic."""
    engine = load_engine(ENGINE_FILE)
    published: list[OutputRecord] = []
    rep = Replay(engine, emit=published.append)
    rep.run(records([(b"u1", body("u1", 1, T0, "purchase", 50.0))]))
    store = rep.store
    assert isinstance(store, MemoryStateStore)
    assert sum(store.counts[("in", 0)].population.values()) == 1
    fired = 0

    def count(stats: object, _batch: object) -> None:
        nonlocal fired
        fired += stats.outcome.timers_fired  # type: ignore[attr-defined]

    rep.on_batch = count
    rep.advance_watermark(T0 + 549 * DAY_MS)
    state = state_json(store.get_user("u1") or b"")
    assert state["due_ms"] == T0 + 550 * DAY_MS, "the last timer is not the expiry"
    assert state["pending"] is None  # every snapshot, the last at 365 days, resolved
    # 52 weekly re-scores, and the deadlines of up to three snapshots per 30 days (the
    # 30-day horizon) and per 180 days (the long one), within a year and a horizon
    assert 0 < fired <= 52 + 3 * 13 + 3 * 3, fired
    rep.advance_watermark(T0 + 20 * 365 * DAY_MS)  # twenty years later
    assert store.get_user("u1") is None and store.timers[("in", 0)] == {}
    assert set(store.counts[("in", 0)].population.values()) == {0}
    assert fired <= 52 + 3 * 13 + 3 * 3 + 1, fired
    assert published[-1].topic == "user-tiers" and published[-1].key == b"u1"
    assert published[-1].value is None


def test_purchases_of_1e308_are_dead_lettered_and_the_user_goes_on() -> None:
    values = [
        (b"u1", body("u1", 1, T0, "purchase", 1e308)),
        (b"u1", body("u1", 2, T0 + 1000, "purchase", 1e308)),
        (b"u1", body("u1", 3, T0 + 2000, "purchase", 20.0)),
    ]
    outputs, store = replay(records(values), load_engine(ENGINE_FILE))
    assert [d["reason"] for d in dlq(outputs)] == ["amount_out_of_range"] * 2
    state = state_json(store.users["u1"])
    assert state["features"]["total_spend"] == 20.0
    assert [c["seq"] for c in changes(outputs)] == [1]


def _stored_then_read(damage: Callable[[bytes], bytes]) -> list[dict[str, object]]:
    """u1's stored state is ``damage``d after its first event; then an event of u1 and
    one of u2 are read: the dead letters."""
    _, store = replay(records([(b"u1", body("u1", 1, T0))]), load_engine(ENGINE_FILE))
    store.users["u1"] = damaged = damage(store.users["u1"])
    later = records([(b"u1", body("u1", 2, T0 + 10)), (b"u2", body("u2", 1, T0 + 20))])
    later = [r._replace(offset=r.offset + 1) for r in later]
    outputs, store = replay(later, load_engine(ENGINE_FILE), store=store)
    assert "u2" in store.users  # the partition went on
    assert store.applied[("in", 0)] == 2
    assert store.users["u1"] == damaged  # kept as it was, for a person to see
    return dlq(outputs)


def test_a_user_whose_stored_state_is_unusable_is_set_aside_and_the_partition_goes_on() -> None:
    def infinite_sum(raw: bytes) -> bytes:
        broken = state_json(raw)
        broken["features"]["spend"][0] = None  # what an infinite sum became when stored
        return orjson.dumps(broken)

    dead = _stored_then_read(infinite_sum)
    assert [d["reason"] for d in dead] == ["unusable_state"]
    assert "features.spend[0] is None" in str(dead[0]["detail"])


def test_a_record_keyed_by_another_user_or_by_nothing_is_dead_lettered() -> None:
    values = [
        (b"u2", body("u1", 1, T0)),
        (None, body("u1", 2, T0)),
        (b"u1", body("u1", 3, T0)),
    ]
    outputs, store = replay(records(values), load_engine(ENGINE_FILE))
    assert [d["reason"] for d in dlq(outputs)] == ["key_mismatch"] * 2
    assert state_json(store.users["u1"])["features"]["events"] == 1


def test_a_dead_letter_of_a_huge_record_fits_the_brokers_limit() -> None:
    rec = InputRecord("in", 0, 5, None, b"k" * 500_000, b"x" * 1_000_000)
    out = dead_letter(rec, Rejection("oversize", "too big"), "dlq", max_copy_bytes=512 * 1024)
    assert len(out.value) + len(out.key or b"") < 1_000_000
    validator("dlq-record.v2").validate(orjson.loads(out.value))


def test_a_timer_never_recreates_a_state_that_is_gone() -> None:
    """The user's state is gone (deleted by hand, or a key of a version that let Redis
    expire states); the timer still in the partition's set fires into nothing and is
    cleared, instead of writing an empty user back."""
    engine = load_engine(ENGINE_FILE)
    rep = Replay(engine, emit=lambda _: None)
    rep.run(records([(b"u1", body("u1", 1, T0, "purchase", 50.0))]))
    store = rep.store
    assert isinstance(store, MemoryStateStore)
    del store.users["u1"]
    rep.advance_watermark(T0 + 40 * DAY_MS)
    assert "u1" not in store.users
    assert all("u1" not in timers for timers in store.timers.values())


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: raw[: len(raw) // 2],  # truncated
        lambda raw: raw[:1] + b"\x09" + raw[2:],  # an unknown format
        lambda raw: raw + b"\x00",  # bytes after its end
    ],
    ids=["truncated", "unknown-format", "trailing-bytes"],
)
def test_a_user_whose_binary_state_is_damaged_is_set_aside_and_the_partition_goes_on(
    damage: Callable[[bytes], bytes],
) -> None:
    """As for a JSON state that cannot be applied: the user's records are dead-lettered
    as ``unusable_state``, the stored bytes are left for a person, the rest goes on."""
    dead = _stored_then_read(damage)
    assert [d["reason"] for d in dead] == ["unusable_state"]
    assert "corrupt user state" in str(dead[0]["detail"])
