"""Input record bytes -> :class:`~online_models.event.Event`, or a reason to dead-letter it.

Every check is the input schema's (``input-event.v1.json``) except the two a schema
cannot express: the size limit, applied before parsing, and the calendar validity of the
timestamp. A rejection carries one of :data:`REJECT_REASONS` and a readable detail.

>>> decoder = EventDecoder(max_bytes=1024)
>>> decoder.decode(b'{"event_id":"e1","user_id":"u1","event_type":"purchase",'
...                b'"timestamp":"2026-01-01T01:00:00+01:00","amount":12.5}')
Event('e1', 'u1', 'purchase', 1767225600000, 12.5)
>>> decoder.decode(b'{"event_id":"e1","user_id":"u1","event_type":"x","timestamp":"soon"}')
Rejection(reason='bad_timestamp', detail='timestamp: "soon" is not valid under any of the ...')
>>> decoder.decode(b"\\xff").reason, decoder.decode(b"{").reason, decoder.decode(b"[]").reason
('bad_encoding', 'not_json', 'not_object')
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, NamedTuple

import orjson

from online_models.event import Event
from schemas import validator

#: Why a record can be dead-lettered; the DLQ schema's ``reason`` enum.
REJECT_REASONS: Final = (
    "not_json",
    "not_object",
    "missing_field",
    "wrong_type",
    "oversize",
    "negative_amount",
    "bad_timestamp",
    "bad_encoding",
    "invalid",
)
DEFAULT_MAX_BYTES: Final = 64 * 1024
_MAX_DETAIL: Final = 300


class Rejection(NamedTuple):
    """Why a record cannot be applied."""

    reason: str
    detail: str


class EventDecoder:
    """Decodes and validates input records against ``input-event.v1``."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.max_bytes = max_bytes
        self._validator = validator("input-event.v1")

    def decode(self, value: bytes | None) -> Event | Rejection:
        """The event in ``value``, or the :class:`Rejection` saying why there is none."""
        if value is None:
            return Rejection("not_json", "empty record (null value)")
        if len(value) > self.max_bytes:
            return Rejection("oversize", f"{len(value)} bytes > limit {self.max_bytes}")
        try:
            obj = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            return _unparseable(value, exc)
        if not isinstance(obj, dict):
            return Rejection("not_object", f"top-level JSON {type(obj).__name__}, not an object")
        if not self._validator.is_valid(obj):
            return _classify(self._validator.iter_errors(obj))
        ts = obj["timestamp"]
        if isinstance(ts, str):
            try:
                ts_ms = parse_rfc3339_ms(ts)
            except ValueError as exc:
                return Rejection("bad_timestamp", f"timestamp {ts!r}: {exc}")
        else:
            ts_ms = int(ts)
        return Event(
            obj["event_id"], obj["user_id"], obj["event_type"], ts_ms, float(obj.get("amount", 0.0))
        )


def parse_rfc3339_ms(text: str) -> int:
    """Epoch milliseconds of an RFC 3339 date-time with offset.

    >>> parse_rfc3339_ms("2026-01-01T00:00:00.5Z"), parse_rfc3339_ms("2026-01-01t01:00:00+01:00")
    (1767225600500, 1767225600000)
    """
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        dt = datetime.fromisoformat(text.upper())  # RFC 3339 allows a lowercase t and z
    if dt.tzinfo is None:
        raise ValueError("no UTC offset")
    return round(dt.timestamp() * 1000)


def _unparseable(value: bytes, exc: orjson.JSONDecodeError) -> Rejection:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError as bad:
        return Rejection("bad_encoding", f"not UTF-8 at byte {bad.start}")
    return Rejection("not_json", str(exc)[:_MAX_DETAIL])


def _classify(errors: Any) -> Rejection:
    """Pick the most telling reason among the schema errors (timestamp and amount first)."""
    best: tuple[int, str, str] | None = None
    for err in errors:
        path = err.instance_path
        kind = type(err.kind).__name__
        field = path[0] if path else None
        if field == "timestamp":
            rank, reason = 0, "bad_timestamp"
        elif field == "amount" and kind == "Minimum":
            rank, reason = 1, "negative_amount"
        elif kind == "Required":
            rank, reason = 2, "missing_field"
        elif kind == "Type":
            rank, reason = 3, "wrong_type"
        else:
            rank, reason = 4, "invalid"
        where = "/".join(str(p) for p in path)
        detail = f"{where}: {err.message}" if where else err.message
        if best is None or rank < best[0]:
            best = (rank, reason, detail[:_MAX_DETAIL])
    if best is None:  # is_valid said no, so there is at least one error
        return Rejection("invalid", "schema validation failed")
    return Rejection(best[1], best[2])
