"""Every kind of bad input gets its reason; every valid form of a good one decodes."""

from __future__ import annotations

import orjson
import pytest

from online_models.event import Event
from schemas.decode import REJECT_REASONS, EventDecoder, Rejection

DECODER = EventDecoder(max_bytes=65536)
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
        {"event_id": "e", "user_id": "u", "event_type": "wishlist_add", "timestamp": 0}
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
    ],
)
def test_bad_records_get_their_reason(raw: bytes | None, reason: str) -> None:
    result = DECODER.decode(raw)
    assert isinstance(result, Rejection), result
    assert result.reason == reason, result
    assert result.reason in REJECT_REASONS and result.detail


def test_reasons_match_the_dlq_schema() -> None:
    from schemas import load

    assert tuple(load("dlq-record.v1")["properties"]["reason"]["enum"]) == REJECT_REASONS


def test_size_limit_is_configurable() -> None:
    assert isinstance(EventDecoder(max_bytes=100).decode(enc()), Rejection)
    with pytest.raises(ValueError):
        EventDecoder(max_bytes=0)
