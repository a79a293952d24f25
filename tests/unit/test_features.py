"""Decayed features equal their closed form whatever the arrival order."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from online_models.event import EVENT_TYPES, PURCHASE_INDEX, REFUND_INDEX, Event
from online_models.features import DAY_MS, RATES_PER_MS, UserFeatures

events_st = st.lists(
    st.tuples(
        st.sampled_from([*EVENT_TYPES[:-1], "wishlist_add"]),
        st.integers(min_value=0, max_value=400 * DAY_MS),
        st.floats(min_value=0, max_value=1e5, allow_nan=False),
    ),
    min_size=1,
    max_size=60,
)


def closed_form(events: list[Event]) -> UserFeatures:
    """sum(x_i * exp(-rate * (t_max - t_i))) computed directly, no increments."""
    t_max = max(e.timestamp_ms for e in events)
    f = UserFeatures.new()
    for h, rate in enumerate(RATES_PER_MS):
        for e in events:
            w = math.exp(-rate * (t_max - e.timestamp_ms))
            f.counts[h][e.type_index] += w
            if e.type_index == PURCHASE_INDEX:
                f.spend[h] += e.amount * w
            elif e.type_index == REFUND_INDEX:
                f.refunded[h] += e.amount * w
    return f


def assert_close(a: list[float], b: list[float]) -> None:
    for x, y in zip(a, b, strict=True):
        assert math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9), (a, b)


@settings(max_examples=200, deadline=None)
@given(events_st)
def test_incremental_equals_closed_form_in_any_order(raw: list[tuple[str, int, float]]) -> None:
    events = [
        Event(f"e{i}", "u", t, ts, amt if t in ("purchase", "refund") else 0.0)
        for i, (t, ts, amt) in enumerate(raw)
    ]
    f = UserFeatures.new()
    for e in events:
        f.apply(e)
    expected = closed_form(events)
    for h in range(len(RATES_PER_MS)):
        assert_close(f.counts[h], expected.counts[h])
    assert_close(f.spend, expected.spend)
    assert_close(f.refunded, expected.refunded)
    assert f.last_ms == max(e.timestamp_ms for e in events)
    assert f.first_ms == min(e.timestamp_ms for e in events)
    assert f.events == len(events)
    assert f.purchases == sum(e.event_type == "purchase" for e in events)
    purchases = [e.timestamp_ms for e in events if e.event_type == "purchase"]
    assert f.last_purchase_ms == (max(purchases) if purchases else None)
    assert math.isclose(
        f.total_spend, sum(e.amount for e in events if e.type_index == PURCHASE_INDEX)
    )


@settings(max_examples=50, deadline=None)
@given(events_st)
def test_json_round_trip_is_exact(raw: list[tuple[str, int, float]]) -> None:
    import orjson

    f = UserFeatures.new()
    for i, (t, ts, amt) in enumerate(raw):
        f.apply(Event(f"e{i}", "u", t, ts, amt))
    again = UserFeatures.from_json(orjson.loads(orjson.dumps(f.to_json())))
    assert again.to_json() == f.to_json()


def test_unknown_types_count_as_other() -> None:
    f = UserFeatures.new()
    f.apply(Event("e1", "u", "wishlist_add", 0))
    assert f.count("other", 0) == 1.0
