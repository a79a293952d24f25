"""Tests of the synthetic event generator (``consumer.demo.synthetic``).

The checks here are written against the input contract (schema v1) directly, not
against the service's decoder, so they hold whatever the decoder does.
"""

from __future__ import annotations

import json
import re
import statistics
from collections import Counter, defaultdict
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.demo.synthetic import (
    BAD_REASONS,
    KNOWN_EVENT_TYPES,
    PROFILES,
    REQUIRED_FIELDS,
    GeneratedRecord,
    GeneratorConfig,
    generate,
    truth,
)

_RFC3339 = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
_MAX_EPOCH_MS = 32503680000000  # year 3000, the schema's bound
_LIMIT = 64 * 1024


def _ts_ms(ts: object) -> int | None:
    """Epoch ms of a valid contract timestamp, else None."""
    if isinstance(ts, bool):
        return None
    if isinstance(ts, int):
        return ts if 0 <= ts <= _MAX_EPOCH_MS else None
    if not isinstance(ts, str) or not _RFC3339.match(ts):
        return None
    try:
        dt = datetime.fromisoformat(ts.upper())
    except ValueError:
        return None
    if dt.tzinfo is None:
        return None
    return round(dt.timestamp() * 1000)


def _is_number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


#: The service's default limits (TIERSTREAM_MIN_EVENT_TIME, _MAX_AMOUNT); far-future
#: records are dated years past any clock these tests meet.
_FLOOR_MS = 946_684_800_000
_MAX_AMOUNT = 1e9
_FUTURE_MS = 4_102_444_800_000  # 2100-01-01


def _classify(value: bytes, limit: int = _LIMIT, key: bytes | None = b"") -> str | None:
    """Why ``value`` breaks the contract (a BAD_REASONS name), or None if it is a good event.
    ``key``: the record key, checked against the user id (b"": do not check)."""
    if len(value) > limit:
        return "oversize"
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return "bad_encoding"
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        with pytest.raises(ValueError):
            json.loads(text)  # the stdlib agrees it is not JSON
        return "not_json"
    if not isinstance(obj, dict):
        return "not_object"
    if any(f not in obj for f in REQUIRED_FIELDS):
        return "missing_field"
    if _ts_ms(obj["timestamp"]) is None:
        return "bad_timestamp"
    if obj["event_type"] in ("purchase", "refund") and "amount" not in obj:
        return "missing_field"
    if "amount" in obj and _is_number(obj["amount"]) and obj["amount"] < 0:
        return "negative_amount"
    strings = ("event_id", "user_id", "event_type", "session_id", "currency")
    if (
        any(f in obj and not isinstance(obj[f], str) for f in strings)
        or ("amount" in obj and not _is_number(obj["amount"]))
        or ("properties" in obj and not isinstance(obj["properties"], dict))
    ):
        return "wrong_type"
    return _beyond_limits(obj, key)


def _beyond_limits(obj: dict[str, Any], key: bytes | None) -> str | None:
    """Why a schema-valid event breaks the service's limits or routing, or None."""
    ts = _ts_ms(obj["timestamp"])
    assert ts is not None
    if "amount" in obj and obj["amount"] > _MAX_AMOUNT:
        return "amount_out_of_range"
    if ts < _FLOOR_MS:
        return "ancient_timestamp"
    if ts > _FUTURE_MS:
        return "future_timestamp"
    if key != b"" and key != obj["user_id"].encode():
        return "key_mismatch"
    return None


# One medium stream shared by the tests that only read it (~0.5 s to generate).
_CFG = GeneratorConfig(users=400, events=30_000, seed=11, bad_fraction=0.02)


@pytest.fixture(scope="module")
def records() -> list[GeneratedRecord]:
    return list(generate(_CFG))


@pytest.fixture(scope="module")
def good(records: list[GeneratedRecord]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in records if r.bad_reason is None]


def test_same_seed_gives_identical_bytes(records: list[GeneratedRecord]) -> None:
    assert list(generate(_CFG)) == records


def test_other_seed_gives_another_stream(records: list[GeneratedRecord]) -> None:
    other = list(generate(GeneratorConfig(users=400, events=30_000, seed=12, bad_fraction=0.02)))
    assert len(other) == len(records)
    assert [r.value for r in other] != [r.value for r in records]
    good = [{r.value for r in rs if r.bad_reason is None} for rs in (records, other)]
    assert not good[0] & good[1]


@pytest.mark.parametrize(
    ("users", "events", "bad_fraction"),
    [(1, 0, 0.0), (1, 1, 0.0), (5, 3, 0.0), (3, 5, 0.0), (10, 1000, 0.1), (50, 77, 1.0),
     (7, 500, 0.5), (200, 3000, 0.003)],
)  # fmt: skip
def test_exact_record_count(users: int, events: int, bad_fraction: float) -> None:
    cfg = GeneratorConfig(users=users, events=events, seed=3, bad_fraction=bad_fraction)
    out = list(generate(cfg))
    assert len(out) == events
    assert sum(r.bad_reason is not None for r in out) == round(bad_fraction * events)


def test_every_good_record_meets_the_contract(
    records: list[GeneratedRecord], good: list[dict[str, Any]]
) -> None:
    for rec in records:
        if rec.bad_reason is None:
            assert _classify(rec.value) is None, rec.value
    for e in good:
        assert all(isinstance(e[f], str) and e[f] for f in ("event_id", "user_id", "event_type"))
        ts = e["timestamp"]
        if isinstance(ts, str):
            assert datetime.fromisoformat(ts).tzinfo is not None
        else:
            assert isinstance(ts, int) and not isinstance(ts, bool)
        if e["event_type"] in ("purchase", "refund"):
            assert _is_number(e["amount"]) and e["amount"] >= 0
            assert isinstance(e["currency"], str)
        else:
            assert "amount" not in e and "currency" not in e
        assert isinstance(e.get("session_id", ""), str)
        assert isinstance(e.get("properties", {}), dict)
    good_keys = [r.key for r in records if r.bad_reason is None]
    assert good_keys == [e["user_id"].encode() for e in good]


def test_timestamp_forms_are_mixed(good: list[dict[str, Any]]) -> None:
    ts = [e["timestamp"] for e in good]
    epoch = sum(isinstance(t, int) for t in ts) / len(ts)
    assert 0.05 < epoch < 0.15
    texts = [t for t in ts if isinstance(t, str)]
    assert any(t.endswith("Z") for t in texts)
    assert any(t.endswith("+00:00") for t in texts)
    assert any(t[-6:] not in ("+00:00", "-00:00") and t[-6] in "+-" for t in texts)
    assert any("." in t for t in texts) and any("." not in t for t in texts)


def test_event_mix_is_plausible(good: list[dict[str, Any]]) -> None:
    types = Counter(e["event_type"] for e in good)
    assert set(KNOWN_EVENT_TYPES) <= set(types)
    other = sum(c for t, c in types.items() if t not in KNOWN_EVENT_TYPES)
    assert 0 < other < 0.01 * len(good)  # a few unknown (still valid) types
    assert types["page_view"] + types["product_view"] > 10 * types["purchase"] > 0
    assert types["checkout"] >= types["purchase"] > types["refund"] > 0
    assert types["signup"] <= _CFG.users


def test_refunds_follow_their_purchase_and_do_not_exceed_it(good: list[dict[str, Any]]) -> None:
    purchases = {e["properties"]["order_id"]: e for e in good if e["event_type"] == "purchase"}
    refunds = [e for e in good if e["event_type"] == "refund"]
    assert refunds
    for r in refunds:
        p = purchases[r["properties"]["order_id"]]
        assert p["user_id"] == r["user_id"]
        assert 0 <= r["amount"] <= p["amount"]
        assert _ts_ms(r["timestamp"]) > _ts_ms(p["timestamp"])  # type: ignore[operator]


def test_amounts_are_heavy_tailed(good: list[dict[str, Any]]) -> None:
    amounts = sorted(e["amount"] for e in good if e["event_type"] == "purchase")
    assert amounts[-1] > 10 * statistics.median(amounts)


def test_every_user_in_truth_appears_and_types_are_known(good: list[dict[str, Any]]) -> None:
    t = list(truth(_CFG))
    assert [u["user_id"] for u in t] == [f"u{i:06d}" for i in range(_CFG.users)]
    assert {u["user_id"] for u in t} == {e["user_id"] for e in good}
    assert {u["type"] for u in t} == {p.name for p in PROFILES}
    assert t == list(truth(_CFG))
    # Types depend on seed and user count only.
    assert list(truth(GeneratorConfig(users=400, events=10, seed=11, days=30))) == t


def test_no_value_has_a_newline(records: list[GeneratedRecord]) -> None:
    assert all(b"\n" not in r.value and r.value for r in records)


def test_bad_records_are_bad_in_their_stated_way(records: list[GeneratedRecord]) -> None:
    bad = [r for r in records if r.bad_reason is not None]
    assert len(bad) == round(0.02 * 30_000)
    assert Counter(r.bad_reason for r in bad).keys() == set(BAD_REASONS)
    for r in bad:
        assert _classify(r.value, key=r.key) == r.bad_reason, r.value[:200]
        if r.bad_reason == "bad_encoding":
            with pytest.raises(UnicodeDecodeError):
                r.value.decode("utf-8")
        elif r.bad_reason == "oversize":
            obj = orjson.loads(r.value)  # otherwise a valid event
            assert _classify(orjson.dumps({**obj, "properties": {}})) is None
        elif r.bad_reason == "not_json":
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(r.value)
        elif r.bad_reason == "negative_amount":
            assert orjson.loads(r.value)["event_type"] == "purchase"
        if r.key is not None:
            assert r.key.decode().startswith("u")


def test_bad_variants_vary(records: list[GeneratedRecord]) -> None:
    by_reason: dict[str, set[str]] = defaultdict(set)
    for r in records:
        if r.bad_reason == "missing_field":
            obj = orjson.loads(r.value)
            by_reason["missing"] |= {f for f in REQUIRED_FIELDS if f not in obj}
        elif r.bad_reason == "bad_timestamp":
            by_reason["ts"].add(repr(orjson.loads(r.value)["timestamp"]))
    assert by_reason["missing"] == set(REQUIRED_FIELDS)
    assert len(by_reason["ts"]) >= 5


def test_every_kind_appears_once_there_are_enough_bad_records() -> None:
    out = list(generate(GeneratorConfig(users=5, events=80, seed=9, bad_fraction=0.15)))
    assert sorted(r.bad_reason for r in out if r.bad_reason) == sorted(BAD_REASONS)


def test_oversize_follows_the_configured_limit() -> None:
    cfg = GeneratorConfig(users=5, events=100, seed=2, bad_fraction=0.2, max_record_bytes=2048)
    sizes = [len(r.value) for r in generate(cfg) if r.bad_reason == "oversize"]
    assert sizes and all(2048 < s < 2048 + 4200 for s in sizes)
    assert all(len(r.value) <= 2048 for r in generate(cfg) if r.bad_reason != "oversize")


def test_some_late_deliveries_and_duplicates(
    records: list[GeneratedRecord], good: list[dict[str, Any]]
) -> None:
    times = [_ts_ms(e["timestamp"]) for e in good]
    newest = 0
    late = []
    for t in times:
        assert t is not None
        if t < newest:
            late.append(newest - t)
        newest = max(newest, t)
    assert 0.001 * len(times) < len(late) < 0.03 * len(times)
    assert max(late) <= 6 * 60_000  # seconds to minutes late, not days

    ids = Counter(e["event_id"] for e in good)
    dup_ids = {i for i, c in ids.items() if c > 1}
    assert len(dup_ids) == sum(ids.values()) - len(ids) == round(0.002 * len(good))
    values = defaultdict(set)
    for r in records:
        if r.bad_reason is None:
            values[orjson.loads(r.value)["event_id"]].add(r.value)
    assert all(len(values[i]) == 1 for i in dup_ids)  # the same bytes again


def test_users_events_come_in_sessions(good: list[dict[str, Any]]) -> None:
    sessions: dict[str, list[int]] = defaultdict(list)
    for e in good:
        if "session_id" in e:
            sessions[e["session_id"]].append(_ts_ms(e["timestamp"]) or 0)
    spans = sorted(max(v) - min(v) for v in sessions.values())
    assert len(sessions) > _CFG.users
    assert spans[len(spans) // 2] < 30 * 60_000  # sessions last minutes


def test_customer_types_overlap_but_differ() -> None:
    cfg = GeneratorConfig(users=1000, events=50_000, seed=4)
    types = {u["user_id"]: u["type"] for u in truth(cfg)}
    purchases: dict[str, Counter[str]] = defaultdict(Counter)
    events: dict[str, Counter[str]] = defaultdict(Counter)
    for r in generate(cfg):
        e = orjson.loads(r.value)
        t = types[e["user_id"]]
        events[t][e["user_id"]] += 1
        purchases[t][e["user_id"]] += e["event_type"] == "purchase"
    p = {t: [c[u] for u in events[t]] for t, c in purchases.items()}
    mean = {t: statistics.mean(v) for t, v in p.items()}
    assert mean["whale"] > mean["loyal"] > mean["browser"]
    assert mean["loyal"] > mean["churning"]
    # ...but no clean split: a busy loyal customer out-buys a quiet whale, and so on.
    assert max(p["loyal"]) > min(p["whale"])
    assert max(p["browser"]) > min(p["bargain_hunter"])
    e = {t: list(c.values()) for t, c in events.items()}
    assert max(e["browser"]) > sorted(e["bargain_hunter"])[len(e["bargain_hunter"]) // 4]


def test_config_is_validated() -> None:
    for bad in (
        {"users": 0},
        {"events": -1},
        {"days": 0},
        {"bad_fraction": 1.5},
        {"start": datetime(2026, 1, 1)},
    ):
        with pytest.raises(ValueError):
            GeneratorConfig(**bad)
    assert GeneratorConfig().start == datetime(2026, 1, 1, tzinfo=UTC)


@settings(max_examples=25, deadline=None)
@given(
    users=st.integers(1, 30),
    events=st.integers(0, 400),
    seed=st.integers(-(2**70), 2**70),
    bad_fraction=st.sampled_from([0.0, 0.01, 0.2, 1.0]),
    days=st.integers(1, 400),
)
def test_any_small_config(
    users: int, events: int, seed: int, bad_fraction: float, days: int
) -> None:
    cfg = GeneratorConfig(
        users=users, events=events, seed=seed, bad_fraction=bad_fraction, days=days
    )
    out = list(generate(cfg))
    assert len(out) == events
    for r in out:
        assert b"\n" not in r.value
        assert _classify(r.value, key=r.key) == r.bad_reason
