"""Every kind of bad input gets its reason; every valid form of a good one decodes."""

from __future__ import annotations

import orjson
import pytest

from online_models.event import Event
from schemas.decode import REJECT_REASONS, EventDecoder, Limits, Rejection, key_rejection

DECODER = EventDecoder(max_bytes=65536)
T = 1_767_225_600_000  # 2026-01-01T00:00:00Z
GOOD = {
    "event_id": "e1",
    "user_id": "u1",
    "event_type": "purchase",
    "timestamp": "2026-03-01T12:00:00.250+02:00",
    "amount": 10.5,
    "currency": "EUR",
    "session_id": "s1",
    "properties": {"sku": "x"},
}


def enc(**changes: object) -> bytes:
    body = {**GOOD, **changes}
    return orjson.dumps({k: v for k, v in body.items() if v is not ...})


def test_good_event() -> None:
    event = DECODER.decode(enc())
    assert isinstance(event, Event)
    assert (event.event_id, event.user_id, event.event_type, event.amount) == (
        "e1",
        "u1",
        "purchase",
        10.5,
    )
    assert event.timestamp_ms == 1772359200250


@pytest.mark.parametrize(
    "ts", ["2026-03-01T10:00:00.250Z", "2026-03-01t10:00:00.250z", 1772359200250]
)
def test_timestamp_forms(ts: object) -> None:
    event = DECODER.decode(enc(timestamp=ts))
    assert isinstance(event, Event) and event.timestamp_ms == 1772359200250


def test_unknown_type_is_other_and_optional_fields_are_optional() -> None:
    raw = orjson.dumps(
        {"event_id": "e", "user_id": "u", "event_type": "wishlist_add", "timestamp": T}
    )
    event = DECODER.decode(raw)
    assert isinstance(event, Event) and event.event_type == "other" and event.amount == 0.0


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "not_json"),
        (b"", "not_json"),
        (b'{"event_id": "x", "user_', "not_json"),
        (b"hello", "not_json"),
        (b"[1, 2]", "not_object"),
        (b'"hello"', "not_object"),
        (enc(event_id=...), "missing_field"),
        (enc(user_id=...), "missing_field"),
        (enc(timestamp=...), "missing_field"),
        (enc(amount=...), "missing_field"),  # purchases carry an amount
        (enc(user_id=42), "wrong_type"),
        (enc(event_type=["purchase"]), "wrong_type"),
        (enc(amount="12"), "wrong_type"),
        (enc(properties="x"), "wrong_type"),
        (enc(amount=-0.01), "negative_amount"),
        (enc(timestamp="yesterday"), "bad_timestamp"),
        (enc(timestamp="2026-13-45T99:00:00Z"), "bad_timestamp"),
        (enc(timestamp="2026-03-01 12:00"), "bad_timestamp"),
        (enc(timestamp="2026-03-01T12:00:00"), "bad_timestamp"),
        (enc(timestamp=-5), "bad_timestamp"),
        (enc(timestamp=10**17), "bad_timestamp"),
        (enc(properties={"blob": "x" * 70000}), "oversize"),
        (enc(user_id="caf\u00e9").replace("caf\u00e9".encode(), b"caf\xe9"), "bad_encoding"),
        (b"\xff\xfe{}", "bad_encoding"),
        (enc(timestamp="9999-12-31T23:59:59Z"), "future_timestamp"),
        (enc(timestamp=32503680000000), "future_timestamp"),
        (enc(timestamp=0), "ancient_timestamp"),
        (enc(timestamp="1999-12-31T23:59:59.999Z"), "ancient_timestamp"),
        (enc(amount=1e308), "amount_out_of_range"),
        (enc(amount=1_000_000_000.01), "amount_out_of_range"),
    ],
)
def test_bad_records_get_their_reason(raw: bytes | None, reason: str) -> None:
    result = DECODER.decode(raw, now_ms=T + 400 * 86_400_000)
    assert isinstance(result, Rejection), result
    assert result.reason == reason, result
    assert result.reason in REJECT_REASONS and result.detail


def test_reasons_match_the_dlq_schema() -> None:
    from schemas import load

    assert tuple(load("dlq-record.v2")["properties"]["reason"]["enum"]) == REJECT_REASONS


def test_size_limit_is_configurable() -> None:
    assert isinstance(EventDecoder(max_bytes=100).decode(enc()), Rejection)
    with pytest.raises(ValueError):
        EventDecoder(max_bytes=0)


def test_the_window_is_measured_from_the_wall_clock_given() -> None:
    day = 86_400_000
    ahead = enc(timestamp=T + day + 1)
    assert isinstance(DECODER.decode(ahead, now_ms=T), Rejection)
    assert isinstance(DECODER.decode(ahead, now_ms=T + 1), Event)  # exactly one day ahead
    assert isinstance(DECODER.decode(ahead), Event)  # no clock: no future limit


def test_limits_are_configurable() -> None:
    loose = EventDecoder(limits=Limits(max_amount=1e12, min_time_ms=0, max_future_ms=0))
    assert isinstance(loose.decode(enc(amount=1e11, timestamp=0)), Event)
    assert loose.decode(enc(timestamp=T + 1), now_ms=T).reason == "future_timestamp"  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        Limits(max_amount=float("inf"))


def test_the_key_must_be_the_user_id() -> None:
    assert key_rejection(b"u1", "u1") is None
    for key in (None, b"u2", b"u1 ", b"x" * 500_000):
        rejection = key_rejection(key, "u1")
        assert rejection is not None and rejection.reason == "key_mismatch"
        assert len(rejection.detail) < 300
