"""Malformed input records, each wrong in exactly one way, named as the service's
dead-letter reasons name them (:data:`schemas.decode.REJECT_REASONS`): what the synthetic
stream (:mod:`consumer.demo.synthetic`) mixes into its good events to exercise the DLQ.
"""

from __future__ import annotations

import random
from typing import Final

import orjson

from schemas.decode import REJECT_REASONS

__all__ = ["BAD_REASONS", "REQUIRED_FIELDS", "corrupt"]

#: Malformed-record kinds, named as the service's DLQ names them: all but the catch-all
#: and ``unusable_state`` (a property of a stored state, not of a record).
BAD_REASONS: tuple[str, ...] = tuple(
    r for r in REJECT_REASONS if r not in ("invalid", "unusable_state")
)
REQUIRED_FIELDS: tuple[str, ...] = ("event_id", "user_id", "event_type", "timestamp")

_MARK: Final = "\x00BAD\x00"  # replaced by raw bytes after encoding (orjson escapes it)
_BAD_BYTES: Final = (
    b"caf\xe9",
    b"\xff\xfe",
    b"\xed\xa0\x80",
    b"\xc0\xaf",
    b"na\x80ve",
    b"\xe2\x82",
)
_BAD_TIMESTAMPS: Final[tuple[str | int | float, ...]] = (
    "yesterday",
    "2026-13-45T99:00:00Z",
    "2026-03-01 12:00",
    "2026-03-01T12:00:00",
    "2026-02-30T10:00:00+00:00",
    "",
    -1_000,
    10**17,
    1767225600000.5,
)
#: Dated past any wall clock this code will meet (the schema allows up to year 3000 in epoch
#: milliseconds and 9999 in RFC 3339).
_FUTURE_TIMESTAMPS: Final[tuple[str | int, ...]] = (
    "9999-12-31T23:59:59Z",
    "2999-01-01T00:00:00.000+02:00",
    32_503_680_000_000,
)
#: Before the default floor (2000-01-01): a producer's unset clock or a zero default.
_ANCIENT_TIMESTAMPS: Final[tuple[str | int, ...]] = (
    0,
    "1970-01-01T00:00:00Z",
    "1999-12-31T23:59:59.999Z",
    86_400_000,
)
_NOT_OBJECT: Final = (b"[1,2]", b'"hello"', b"42", b"null", b"true", b"[]", b"3.5")
_NOT_JSON_TEXT: Final = (
    b"hello world",
    b"event_id=e1 user_id=u1 event_type=login",
    b"{'event_id': 'x', 'user_id': 'u1'}",
    b'{"event_id": "x", "user_id": "u1",}',
    b'{"event_id": "x"}{"event_id": "y"}',
    b"<html><body>502 Bad Gateway</body></html>",
    b"undefined",
)


def corrupt(
    reason: str, rng: random.Random, d: dict[str, object], max_bytes: int
) -> tuple[bytes | None, bytes]:
    """The Kafka key and value of a record malformed in exactly the way ``reason`` names,
    built from the valid event ``d`` (which it changes).

    >>> rng = random.Random(1)
    >>> event = {"event_id": "e1", "user_id": "u1", "event_type": "login", "timestamp": 0}
    >>> corrupt("missing_field", rng, dict(event), 65536)  # no user id: no key either
    (None, b'{"event_id":"e1","event_type":"login","timestamp":0}')
    >>> corrupt("bad_timestamp", rng, dict(event), 65536)[1]
    b'{"event_id":"e1","user_id":"u1","event_type":"login","timestamp":"2026-13-45T99:00:00Z"}'
    """
    uid = d["user_id"]
    key: bytes | None = uid.encode() if isinstance(uid, str) else None
    value: bytes
    if reason == "not_json":
        if rng.random() < 0.5:
            text = orjson.dumps(d).decode()
            value = text[: 1 + rng.randrange(len(text) - 1)].encode()  # never the closing }
        else:
            value = rng.choice(_NOT_JSON_TEXT)
        key = None
    elif reason == "not_object":
        value = orjson.dumps([d]) if rng.random() < 0.3 else rng.choice(_NOT_OBJECT)
        key = None
    elif reason == "missing_field":
        drop = rng.choice(REQUIRED_FIELDS)
        del d[drop]
        key = None if drop == "user_id" else key
        value = orjson.dumps(d)
    elif reason == "wrong_type":
        value = _wrong_type(d, rng)
        key = key if isinstance(d["user_id"], str) else None
    elif reason == "oversize":
        old = d.get("properties")
        props: dict[str, object] = dict(old) if isinstance(old, dict) else {}
        props["blob"] = ""
        d["properties"] = props
        pad = max_bytes - len(orjson.dumps(d)) + 1 + rng.randrange(4096)
        props["blob"] = ("lorem ipsum dolor sit amet " * (pad // 27 + 1))[:pad]
        value = orjson.dumps(d)
    elif reason == "negative_amount":
        d["event_type"] = "purchase"
        d["amount"] = -0.01 if rng.random() < 0.2 else -round(rng.lognormvariate(3.0, 1.0), 2)
        d.setdefault("currency", "EUR")
        d["properties"] = {"order_id": f"o{rng.getrandbits(48):012x}", "items": 1}
        value = orjson.dumps(d)
    elif reason == "bad_timestamp":
        d["timestamp"] = rng.choice(_BAD_TIMESTAMPS)
        value = orjson.dumps(d)
    elif reason in _BEYOND_LIMITS:
        key, value = _beyond_limits(reason, rng, d, key)
    elif reason == "bad_encoding":
        d["properties"] = {"query": _MARK, "note": "latin-1 or broken UTF-8 inside a string"}
        marker = orjson.dumps(_MARK)[1:-1]
        value = orjson.dumps(d).replace(marker, rng.choice(_BAD_BYTES), 1)
    else:
        raise ValueError(f"unknown bad reason {reason!r}")
    return key, value


#: Kinds valid by the schema that a deployment's limits or routing refuse.
_BEYOND_LIMITS: Final = (
    "future_timestamp",
    "ancient_timestamp",
    "amount_out_of_range",
    "key_mismatch",
)


def _beyond_limits(
    reason: str, rng: random.Random, d: dict[str, object], key: bytes | None
) -> tuple[bytes | None, bytes]:
    if reason == "future_timestamp":
        d["timestamp"] = rng.choice(_FUTURE_TIMESTAMPS)
    elif reason == "ancient_timestamp":
        d["timestamp"] = rng.choice(_ANCIENT_TIMESTAMPS)
    elif reason == "amount_out_of_range":
        d["event_type"] = "purchase"
        d["amount"] = rng.choice((1e308, 1e10, 2.5e9))
        d.setdefault("currency", "EUR")
    else:  # key_mismatch: no key, another user's, or a huge one
        which = rng.randrange(3)
        key = (None, f"u{rng.randrange(10**6):06d}x".encode(), f"u{'x' * 2000}".encode())[which]
    return key, orjson.dumps(d)


def _wrong_type(d: dict[str, object], rng: random.Random) -> bytes:
    which = rng.randrange(8)
    if which == 0:
        d["user_id"] = rng.randrange(1, 10**6)
    elif which == 1:
        d["event_type"] = [d["event_type"]]
    elif which == 2:
        d["event_id"] = rng.randrange(1, 10**9)
    elif which == 3:  # amount as a string, on an otherwise valid purchase
        d["event_type"] = "purchase"
        d["amount"] = f"{rng.lognormvariate(3.0, 1.0):.2f}"
        d.setdefault("currency", "EUR")
    elif which == 4:
        d["properties"] = "category=shoes&product_id=p00042"
    elif which == 5:
        d["properties"] = ["p00042", "p00043"]
    elif which == 6:
        d["session_id"] = rng.randrange(1, 10**6)
    else:  # currency as a number, on an otherwise valid purchase
        d["event_type"] = "purchase"
        d["amount"] = round(rng.lognormvariate(3.0, 1.0), 2)
        d["currency"] = 978
    return orjson.dumps(d)
