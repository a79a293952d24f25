"""Tiers and labels move in event time without the user's own events: a user who never
returns gets a negative label once the deadline passes, and falls a tier by inactivity."""

from __future__ import annotations

from typing import Any

import orjson

from consumer.service.records import InputRecord
from consumer.service.tier_config import DEFAULT_TIERS_FILE, load_engine
from consumer.tools.replay import replay
from online_models.features import DAY_MS
from online_models.state_codec import state_json

T0 = 1_767_225_600_000


def event(
    offset: int, user: str, etype: str, day: float, amount: float | None = None
) -> InputRecord:
    body: dict[str, object] = {
        "event_id": f"{user}-{offset}",
        "user_id": user,
        "event_type": etype,
        "timestamp": T0 + round(day * DAY_MS),
    }
    if amount is not None:
        body["amount"] = amount
    return InputRecord("in", 0, offset, None, user.encode(), orjson.dumps(body))


def stream() -> list[InputRecord]:
    """A big spender buys on days 0-3 and is never seen again; another user keeps the
    partition's event time moving for 300 days."""
    records = [event(i, "whale", "purchase", i * 0.5, 400.0) for i in range(8)]
    records += [event(1000 + d, "regular", "page_view", 4 + d) for d in range(300)]
    return records


def changes_of(outputs: list, user: str) -> list[dict]:  # type: ignore[type-arg]
    return [
        orjson.loads(o.value)
        for o in outputs
        if o.topic == "user-tier-changes" and o.key == user.encode()
    ]


def test_a_silent_user_falls_by_inactivity_on_time() -> None:
    outputs, _ = replay(stream(), load_engine(DEFAULT_TIERS_FILE), batch_size=7)
    whale = changes_of(outputs, "whale")
    assert whale[0]["previous_tier"] is None
    peak = max(whale, key=lambda c: c["scores"]["value_score"])
    assert peak["tier"] in ("engaged", "vip")
    falls = [c for c in whale if c["reason"]["kind"] == "inactivity"]
    assert falls, "no inactivity change was published"
    assert all(c["reason"]["direction"] == "down" for c in falls)
    order = ["dormant", "casual", "engaged", "vip"]
    assert order.index(falls[-1]["tier"]) < order.index(peak["tier"])
    # each fall happens on a timer (a re-score tick or the label deadline), in event time,
    # after the user's last event
    last_event_ms = T0 + round(3.5 * DAY_MS)
    for c in falls:
        from schemas.decode import parse_rfc3339_ms

        t = parse_rfc3339_ms(c["event_time"])
        assert t > last_event_ms
    assert [c["seq"] for c in whale] == list(range(1, len(whale) + 1))


def test_a_user_who_never_returns_yields_a_negative_label() -> None:
    engine = load_engine(DEFAULT_TIERS_FILE)
    labels: list[tuple[tuple[float, ...], float | None]] = []
    learn = engine.models.learn_label

    def spy(x: list[float], heads: dict[int, float], *args: Any, **group: Any) -> None:
        labels.append((tuple(x), heads.get(0)))  # the snapshot's vector says whose it is
        learn(x, heads, *args, **group)

    engine.models.learn_label = spy  # type: ignore[method-assign]
    records = stream()
    cut = next(
        i
        for i, r in enumerate(records)
        if orjson.loads(r.value or b"")["timestamp"] > T0 + 33 * DAY_MS
    )
    _, store = replay(records[:cut], engine, batch_size=5)
    # The whale's first 30-day snapshot (day 0) resolved at its deadline, positive: it
    # bought on days 0.5 to 3.5; later ones were taken on its timers, the whale silent.
    assert labels[0][1] == 1.0
    whale = state_json(store.users["whale"])
    silent = [p for p in whale["pending"] if p[0] == 30 * DAY_MS and p[1] > T0 + 3.5 * DAY_MS]
    pending = min(silent, key=lambda p: p[1])
    snapshot = tuple(pending[2])
    assert snapshot not in {x for x, _ in labels}, "the whale's snapshot resolved too early"
    # The regular user's events carry the watermark past its deadline: it fires, negative.
    _, store = replay(records[cut:], engine, store=store, batch_size=5)
    assert [y for x, y in labels if x == snapshot] == [0.0]
