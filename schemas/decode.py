"""Input record bytes -> :class:`~online_models.event.Event`, or a reason to dead-letter it.

Every check is the input schema's (``input-event.v1.json``) except those a schema cannot
express: the size limit, applied before parsing, the calendar validity of the timestamp,
and the limits a deployment sets (:class:`Limits`): the event-time window and the largest
amount. A rejection carries one of :data:`REJECT_REASONS` and a readable detail.

Why a window: one event dated in the year 9999 (or 1970) moves its partition's event-time
watermark by thousands of years, and every timer of the partition fires up to it; worse,
no later event can move the watermark again, so the partition's timers never fire after.
An event more than ``max_future_ms`` ahead of the wall clock, or older than
``min_time_ms``, is dead-lettered instead. Why an amount limit: two purchases of 1e308
make a decayed spend infinite, which JSON cannot store.

>>> decoder = EventDecoder(max_bytes=1024)
>>> decoder.decode(b'{"event_id":"e1","user_id":"u1","event_type":"purchase",'
...                b'"timestamp":"2026-01-01T01:00:00+01:00","amount":12.5}')
Event('e1', 'u1', 'purchase', 1767225600000, 12.5)
>>> decoder.decode(b'{"event_id":"e1","user_id":"u1","event_type":"x","timestamp":"soon"}')
Rejection(reason='bad_timestamp', detail='timestamp: "soon" is not valid under any of the ...')
>>> decoder.decode(b"\\xff").reason, decoder.decode(b"{").reason, decoder.decode(b"[]").reason
('bad_encoding', 'not_json', 'not_object')
>>> far = b'{"event_id":"e","user_id":"u","event_type":"login","timestamp":"9999-12-31T00:00:00Z"}'
>>> decoder.decode(far, now_ms=1_767_225_600_000).reason
'future_timestamp'
>>> key_rejection(b"u2", "u1").reason, key_rejection(b"u1", "u1") is None
('key_mismatch', True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, NamedTuple

import orjson

from online_models.erasure import ForgetRequest
from online_models.event import Event
from online_models.timefmt import iso_utc_ms
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
    "future_timestamp",
    "ancient_timestamp",
    "amount_out_of_range",
    "key_mismatch",
    "unusable_state",
)
DEFAULT_MAX_BYTES: Final = 64 * 1024
#: The field that marks a control record (a forget request) in the input topic.
CONTROL_FIELD: Final = "tierstream_control"
_MAX_DETAIL: Final = 300
#: How much of a record key a detail quotes.
_KEY_QUOTE: Final = 64


@dataclass(frozen=True)
class Limits:
    """What a deployment accepts beyond the schema (the defaults are the settings').

    ``max_future_ms`` is measured from the wall clock given to :meth:`EventDecoder.decode`;
    an event up to that far ahead is accepted (producers' clocks drift).
    """

    max_bytes: int = DEFAULT_MAX_BYTES
    #: Largest ``amount``: a billion in any currency is past any one order.
    max_amount: float = 1e9
    #: Events before this are refused: 2000-01-01T00:00:00Z.
    min_time_ms: int = 946_684_800_000
    #: Events more than this ahead of the wall clock are refused: one day.
    max_future_ms: int = 86_400_000

    def __post_init__(self) -> None:
        if self.max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        if not (math.isfinite(self.max_amount) and self.max_amount > 0):
            raise ValueError("max_amount must be a positive finite number")
        if self.max_future_ms < 0:
            raise ValueError("max_future_ms must be >= 0")


class Rejection(NamedTuple):
    """Why a record cannot be applied."""

    reason: str
    detail: str


class EventDecoder:
    """Decodes and validates input records against ``input-event.v1`` and the limits."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES, *, limits: Limits | None = None) -> None:
        self.limits = limits if limits is not None else Limits(max_bytes=max_bytes)
        self.max_bytes = self.limits.max_bytes
        self._validator = validator("input-event.v1")
        self._forget = validator("forget-request.v1")

    def decode(
        self, value: bytes | None, *, now_ms: int | None = None
    ) -> Event | ForgetRequest | Rejection:
        """The event in ``value``, or the :class:`Rejection` saying why there is none.
        ``now_ms`` is the wall clock the future limit is measured from (None: no limit)."""
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
        if CONTROL_FIELD in obj:
            return self.decode_forget(obj)
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
        amount = float(obj.get("amount", 0.0))
        limits = self.limits
        if amount > limits.max_amount:  # also catches nothing finite: orjson refuses inf
            return Rejection(
                "amount_out_of_range", f"amount {amount:g} > limit {limits.max_amount:g}"
            )
        if ts_ms < limits.min_time_ms:
            return Rejection(
                "ancient_timestamp",
                f"timestamp {iso_utc_ms(ts_ms)} is before {iso_utc_ms(limits.min_time_ms)}",
            )
        if now_ms is not None and ts_ms > now_ms + limits.max_future_ms:
            return Rejection(
                "future_timestamp",
                # Not the clock's reading: two replays of a file give the same bytes.
                f"timestamp {iso_utc_ms(ts_ms)} is more than {limits.max_future_ms / 1000:g} s "
                "ahead of the wall clock",
            )
        props = obj.get("properties")
        category = props.get("category") if props is not None else None
        return Event(
            obj["event_id"],
            obj["user_id"],
            obj["event_type"],
            ts_ms,
            amount,
            category=category if isinstance(category, str) else None,
        )

    def decode_forget(self, obj: dict[str, Any]) -> ForgetRequest | Rejection:
        """A control record: a forget request (``forget-request.v1``), or why it is not one.

        >>> EventDecoder().decode(b'{"tierstream_control": "forget", "user_id": "u1",'
        ...                       b' "request_id": "r1", "requested_at": "2026-05-01T00:00:00Z"}')
        ForgetRequest(user_id='u1', request_id='r1', requested_ms=1777593600000)
        """
        if not self._forget.is_valid(obj):
            errors = list(self._forget.iter_errors(obj))
            detail = "; ".join(e.message for e in errors)[:_MAX_DETAIL]
            return Rejection("invalid", f"forget request: {detail}")
        try:
            requested = parse_rfc3339_ms(obj["requested_at"])
        except ValueError as exc:
            return Rejection("bad_timestamp", f"requested_at {obj['requested_at']!r}: {exc}")
        return ForgetRequest(obj["user_id"], obj["request_id"], requested)


def key_rejection(key: bytes | None, user_id: str) -> Rejection | None:
    """Why a record's Kafka key does not route its user, or None when it does.

    The input topic must be keyed by ``user_id``: the partition then owns the user, and one
    instance at a time updates them. A record with another key (or none) would put the
    user on two partitions, so two instances would update them at once.
    """
    if key is None:
        return Rejection("key_mismatch", f"no record key; the key must be the user_id {user_id!r}")
    if key != user_id.encode():
        quoted = key[:_KEY_QUOTE]
        more = f" ({len(key)} bytes)" if len(key) > _KEY_QUOTE else ""
        return Rejection(
            "key_mismatch", f"record key {quoted!r}{more} is not the user_id {user_id[:64]!r}"
        )
    return None


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
