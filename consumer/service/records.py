"""Records crossing the service boundary, independent of any Kafka client's classes.

An :class:`OutputRecord` is stored in the outbox as one binary frame, so a re-publish
after a crash sends the very same bytes.

>>> rec = OutputRecord("user-tier-changes", b"u1", b'{"tier":"vip"}')
>>> OutputRecord.from_frame(rec.to_frame()) == rec
True
>>> OutputRecord.from_frame(OutputRecord("dlq", None, b"").to_frame()).key is None
True
>>> OutputRecord.from_frame(OutputRecord("user-tiers", b"u1", None).to_frame()).value is None
True
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

_HEADER: Final = struct.Struct(">HIB")
_NO_KEY: Final = 0xFFFFFFFF
_VALUE, _TOMBSTONE = 0, 1


class InputRecord(NamedTuple):
    """One record read from the input topic."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None


class OutputRecord(NamedTuple):
    """One record to publish; a ``None`` value is a tombstone (compacted topics)."""

    topic: str
    key: bytes | None
    value: bytes | None

    def to_frame(self) -> bytes:
        """``topic len | key len | tombstone? | topic | key | value``; key len
        ``0xFFFFFFFF``: no key."""
        topic = self.topic.encode()
        key = self.key
        header = _HEADER.pack(
            len(topic),
            _NO_KEY if key is None else len(key),
            _TOMBSTONE if self.value is None else _VALUE,
        )
        return b"".join((header, topic, key or b"", self.value or b""))

    @classmethod
    def from_frame(cls, frame: bytes) -> OutputRecord:
        """Inverse of :meth:`to_frame`."""
        topic_len, key_len, kind = _HEADER.unpack_from(frame)
        start = _HEADER.size
        topic = frame[start : start + topic_len].decode()
        start += topic_len
        key = None
        if key_len != _NO_KEY:
            key = frame[start : start + key_len]
            start += key_len
        return cls(topic, key, None if kind == _TOMBSTONE else frame[start:])


class KafkaOffsets(NamedTuple):
    """Where a partition stands in Kafka: the group's committed offset (None: never
    committed) and the offset of its first retained record."""

    committed: int | None
    first: int
