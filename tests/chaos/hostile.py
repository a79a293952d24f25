"""Malformed and hostile input records, each wrong in exactly one way, with the DLQ reason
it must get: a seeded generator (the same seed gives the same records).

Families:

- ``schema``: every way the input schema (``schemas/input-event.v1.json``) can be
  violated, one per record: not JSON (truncated, text, empty, a null value), not an
  object, each required field missing (and ``amount`` on a purchase), each field of the
  wrong type, each length bound broken, a negative amount, each kind of bad timestamp
  (pattern, calendar, range, type), invalid UTF-8, over the size limit.
- ``key``: valid events whose record key is not their ``user_id``: another user's id, no
  key (null), an empty key, the id with a trailing space, a ~500 KB key; and ~500 KB keys
  on records that are malformed anyway (their DLQ copy must still fit the broker's limit).
- ``time``: valid events dated far in the future (the year 9999, the schema's largest
  epoch, the year 2999, a month ahead of the wall clock) or long ago (epoch 0, 1 ms,
  1970, the year 1, 1999).
- ``number``: amounts of 1e308 (the largest doubles: two of them sum to infinity), 1e300.

The reasons of the last three families are those of ``schemas/dlq-record.v2.json``
(``key_mismatch``, ``future_timestamp``, ``ancient_timestamp``, ``amount_out_of_range``).
Hostile events name real users of the valid stream, so a hostile record that is applied
instead of dead-lettered changes a real user's state, which the comparison with the
clean run of the valid records catches.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

HUGE_KEY_BYTES = 500 * 1024
MAX_RECORD_BYTES = 64 * 1024  # the service's default TIERSTREAM_MAX_RECORD_BYTES
FAMILIES = ("schema", "key", "time", "number")
_DAY_MS = 86_400_000


@dataclass(frozen=True)
class Hostile:
    """One record to mix in: its key and value, the DLQ reason it must get, and why."""

    key: bytes | None
    value: bytes | None
    reason: str
    family: str
    what: str


Maker = Callable[[random.Random, dict[str, Any]], tuple[bytes | None, bytes | None, str]]


def _event(rng: random.Random, user: str, t_ms: int) -> dict[str, Any]:
    kind = rng.choice(("page_view", "purchase", "login", "add_to_cart", "refund"))
    d: dict[str, Any] = {
        "event_id": f"hostile-{rng.getrandbits(64):016x}",
        "user_id": user,
        "event_type": kind,
        "timestamp": t_ms,
        "session_id": f"s{rng.getrandbits(32):08x}",
    }
    if kind in ("purchase", "refund"):
        d["amount"] = round(rng.uniform(1, 300), 2)
        d["currency"] = "EUR"
    return d


def _dump(d: dict[str, Any]) -> bytes:
    return orjson.dumps(d)


def _keyed(d: dict[str, Any]) -> bytes | None:
    uid = d.get("user_id")
    return uid.encode() if isinstance(uid, str) else None


Transform = Callable[[dict[str, Any]], tuple[bytes | None, bytes | None]]


def _set(name: str, value: Any) -> Transform:
    """The event with ``name`` set to ``value``, keyed by its (original) user id."""
    return lambda d: (_keyed(d), _dump({**d, name: value}))


def _drop(name: str) -> Transform:
    return lambda d: (_keyed(d), _dump({k: v for k, v in d.items() if k != name}))


def _raw(value: bytes, *, keyed: bool = False) -> Transform:
    return lambda d: (_keyed(d) if keyed else None, value)


def _marked(bad: bytes) -> Transform:
    """Invalid UTF-8 ``bad`` inside a string of an otherwise valid event."""
    return lambda d: (_keyed(d), _dump({**d, "properties": {"q": "MARK"}}).replace(b"MARK", bad))


def _purchase_without_amount(d: dict[str, Any]) -> tuple[bytes | None, bytes]:
    rest = {k: v for k, v in d.items() if k != "amount"}
    return _keyed(d), _dump({**rest, "event_type": "purchase", "currency": "EUR"})


_WRONG_TYPES: list[tuple[str, Any]] = [
    ("user_id", 12345),
    ("user_id", None),
    ("event_id", 987),
    ("event_id", True),
    ("event_type", ["login"]),
    ("event_type", 7),
    ("amount", "12.50"),
    ("amount", [1]),
    ("currency", 978),
    ("session_id", 42),
    ("properties", "category=shoes"),
    ("properties", ["p1"]),
    ("properties", 3),
]
_BAD_LENGTHS: list[tuple[str, str]] = [
    ("event_id", ""),
    ("event_id", "e" * 257),
    ("event_type", ""),
    ("event_type", "t" * 65),
    ("currency", ""),
    ("currency", "C" * 17),
    ("session_id", "s" * 257),
]
_BAD_TIMESTAMPS: list[Any] = [
    "yesterday",
    "2026-13-45T99:00:00Z",
    "2026-03-01 12:00",
    "2026-03-01T12:00:00",
    "2026-02-30T10:00:00+00:00",
    "",
    -1000,
    10**17,
    1767225600000.5,
    True,
    None,
    [1767225600000],
]
_NOT_OBJECTS = (b"[1,2]", b'"hello"', b"42", b"null", b"true", b"[]", b"3.5")

#: (reason, what, transform) of every schema violation: each breaks exactly one rule.
_SCHEMA: list[tuple[str, str, Transform]] = [
    ("not_json", "truncated JSON", lambda d: (_keyed(d), _dump(d)[:-3])),
    ("not_json", "plain text", _raw(b"event_id=e1 user_id=u1")),
    ("not_json", "Python repr", lambda d: (None, repr(d).encode())),
    ("not_json", "trailing comma", lambda d: (_keyed(d), _dump(d)[:-1] + b",}")),
    ("not_json", "two objects", lambda d: (_keyed(d), _dump(d) + _dump(d))),
    ("not_json", "empty value", _raw(b"", keyed=True)),
    ("not_json", "null value (tombstone)", lambda d: (_keyed(d), None)),
    ("not_json", "NaN literal", lambda d: (_keyed(d), _dump(d)[:-1] + b',"x":NaN}')),
    ("not_json", "1e309 (infinite) number", lambda d: (_keyed(d), _dump(d)[:-1] + b',"x":1e309}')),
    *[("not_object", f"top level {t.decode()}", _raw(t)) for t in _NOT_OBJECTS],
    ("not_object", "a list of one event", lambda d: (_keyed(d), orjson.dumps([d]))),
    *[
        ("missing_field", f"no {name}", _drop(name))
        for name in ("event_id", "user_id", "event_type", "timestamp")
    ],
    ("missing_field", "purchase without amount", _purchase_without_amount),
    *[("wrong_type", f"{name} = {bad!r}", _set(name, bad)) for name, bad in _WRONG_TYPES],
    *[("invalid", f"{name} of length {len(bad)}", _set(name, bad)) for name, bad in _BAD_LENGTHS],
    (
        "negative_amount",
        "purchase of -12.5",
        lambda d: _set("amount", -12.5)({**d, "event_type": "purchase", "currency": "EUR"}),
    ),
    ("negative_amount", "any event with amount -0.01", _set("amount", -0.01)),
    *[("bad_timestamp", f"timestamp {ts!r}"[:60], _set("timestamp", ts)) for ts in _BAD_TIMESTAMPS],
    ("bad_encoding", "Latin-1 byte in a string", _marked(b"caf\xe9")),
    ("bad_encoding", "truncated UTF-8", _marked(b"\xe2\x82")),
    ("oversize", "a valid event over 64 KiB", _set("properties", {"blob": "x" * MAX_RECORD_BYTES})),
]


def _maker(transform: Transform, what: str) -> Maker:
    def make(rng: random.Random, d: dict[str, Any]) -> tuple[bytes | None, bytes | None, str]:
        key, value = transform(d)
        return key, value, what

    return make


def _schema_makers() -> list[tuple[str, Maker]]:
    return [(reason, _maker(transform, what)) for reason, what, transform in _SCHEMA]


def _key_makers(users: Sequence[str]) -> list[tuple[str, Maker]]:
    def other(rng: random.Random, d: dict[str, Any]) -> tuple[bytes | None, bytes | None, str]:
        key = rng.choice([u for u in users if u != d["user_id"]] or ["nobody"])
        return key.encode(), _dump(d), "key is another user's id"

    def huge(rng: random.Random, d: dict[str, Any]) -> tuple[bytes | None, bytes | None, str]:
        return (
            d["user_id"].encode() * (HUGE_KEY_BYTES // len(d["user_id"]) + 1),
            _dump(d),
            "500 KB key",
        )

    return [
        ("key_mismatch", other),
        ("key_mismatch", lambda rng, d: (None, _dump(d), "null key")),
        ("key_mismatch", lambda rng, d: (b"", _dump(d), "empty key")),
        (
            "key_mismatch",
            lambda rng, d: (d["user_id"].encode() + b" ", _dump(d), "key with a trailing space"),
        ),
        ("key_mismatch", huge),
        (
            "not_json",
            lambda rng, d: (b"k" * HUGE_KEY_BYTES, b"{broken", "500 KB key, value not JSON"),
        ),
        (
            "bad_timestamp",
            lambda rng, d: (
                b"k" * HUGE_KEY_BYTES,
                _dump({**d, "timestamp": "soon"}),
                "500 KB key, bad timestamp",
            ),
        ),
    ]


def _time_makers(now_ms: int) -> list[tuple[str, Maker]]:
    def at(ts: Any, what: str) -> Maker:
        return lambda rng, d: (_keyed(d), _dump({**d, "timestamp": ts}), what)

    return [
        ("future_timestamp", at("9999-12-31T23:59:59Z", "the year 9999")),
        ("future_timestamp", at("9999-12-31T23:59:59.999+02:00", "the year 9999, with an offset")),
        (
            "future_timestamp",
            at(32_503_680_000_000, "epoch ms 32503680000000 (the schema's largest)"),
        ),
        ("future_timestamp", at("2999-01-01T00:00:00Z", "the year 2999")),
        ("future_timestamp", at(now_ms + 30 * _DAY_MS, "a month ahead of the wall clock")),
        ("ancient_timestamp", at(0, "epoch 0")),
        ("ancient_timestamp", at(1, "epoch 1 ms")),
        ("ancient_timestamp", at("1970-01-01T00:00:00Z", "1970-01-01")),
        ("ancient_timestamp", at("0001-01-01T00:00:00Z", "the year 1")),
        ("ancient_timestamp", at("1999-12-31T23:59:59Z", "the last second of 1999")),
    ]


def _number_makers() -> list[tuple[str, Maker]]:
    def amount(kind: str, value: float) -> Maker:
        return lambda rng, d: (
            _keyed(d),
            _dump({**d, "event_type": kind, "amount": value, "currency": "EUR"}),
            f"{kind} of {value:g}",
        )

    return [
        ("amount_out_of_range", amount("purchase", 1e308)),
        ("amount_out_of_range", amount("purchase", 1.7976931348623157e308)),
        ("amount_out_of_range", amount("refund", 1e308)),
        ("amount_out_of_range", amount("purchase", 1e300)),
    ]


def _makers(family: str, users: Sequence[str], now_ms: int) -> list[tuple[str, Maker]]:
    if family == "schema":
        return _schema_makers()
    if family == "key":
        return _key_makers(users)
    if family == "time":
        return _time_makers(now_ms)
    if family == "number":
        return _number_makers()
    raise ValueError(f"unknown family {family!r}")


def hostile_records(
    n: int,
    users: Sequence[str],
    *,
    seed: int,
    base_ms: int,
    span_ms: int,
    families: Sequence[str] = FAMILIES,
    now_ms: int | None = None,
) -> list[Hostile]:
    """``n`` bad records, every kind of ``families`` in turn (a seeded permutation of
    the kinds, repeated), built from valid events of ``users`` dated within
    ``[base_ms, base_ms + span_ms)``."""
    now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    every: list[tuple[str, str, Maker]] = [
        (family, reason, maker)
        for family in families
        for reason, maker in _makers(family, users, now)
    ]
    rng = random.Random(seed)
    order = list(range(len(every)))
    rng.shuffle(order)
    out = []
    for i in range(n):
        family, reason, maker = every[order[i % len(every)]]
        d = _event(rng, rng.choice(users), base_ms + rng.randrange(span_ms))
        key, value, what = maker(rng, d)
        out.append(Hostile(key, value, reason, family, what))
    return out


def kinds(families: Sequence[str] = FAMILIES) -> int:
    """How many distinct kinds ``families`` hold: a stream of at least that many bad
    records has each kind at least once."""
    return sum(len(_makers(f, ["u1", "u2"], 0)) for f in families)
