"""Records crossing the service boundary, independent of any Kafka client's classes.

An :class:`OutputRecord` is one binary frame, so a re-publish after a crash sends the
very same bytes:

>>> rec = OutputRecord("user-tier-changes", b"u1", b'{"tier":"vip"}')
>>> OutputRecord.from_frame(rec.to_frame()) == rec
True
>>> OutputRecord.from_frame(OutputRecord("dlq", None, b"").to_frame()).key is None
True
>>> OutputRecord.from_frame(OutputRecord("user-tiers", b"u1", None).to_frame()).value is None
True

A batch's outputs of one partition go to its outbox as one entry, their frames
compressed together (:func:`pack_outbox`): every output crosses to the state store and
its append-only file, and a batch's tier changes share most of their bytes (the same
keys, reasons, tiers), so a bundle of them is 25 to 40 times smaller than the frames,
compressed by Zstandard (docs/performance.md, "The outbox, compressed").
:func:`unpack_outbox` reads a bundle, a bundle of earlier versions (zlib) and a single
frame as still earlier ones stored it:

>>> outs = [rec, OutputRecord("user-tiers", b"u1", None), OutputRecord("dlq", None, b"x")]
>>> unpack_outbox(pack_outbox(outs)) == outs
True
>>> unpack_outbox(rec.to_frame()) == [rec]
True
>>> unpack_outbox(_BUNDLE + zlib.compress(_LENGTH.pack(len(rec.to_frame())) + rec.to_frame()))
[OutputRecord(topic='user-tier-changes', key=b'u1', value=b'{"tier":"vip"}')]
"""

from __future__ import annotations

import struct
import threading
import zlib
from collections.abc import Sequence
from typing import Final, NamedTuple

import zstandard

_HEADER: Final = struct.Struct(">HIB")
_NO_KEY: Final = 0xFFFFFFFF
_VALUE, _TOMBSTONE = 0, 1
#: The first byte of an outbox bundle: compressed by Zstandard (written), or by zlib
#: (earlier versions; read). A frame's is the high byte of its topic name's length (at
#: most 249 bytes, Kafka's limit): always 0.
_ZSTD_BUNDLE: Final = b"\xb6"
_BUNDLE: Final = b"\xb5"
_LENGTH: Final = struct.Struct(">I")
#: Zstandard's level 1: 0.6-0.7 µs an output and a 25-40x smaller bundle of tier changes,
#: where zlib's level 1 took 1.6-2.5 µs for 18-23x.
_LEVEL: Final = 1
#: A bundle claiming more than this is damaged (a batch's outputs are some megabytes).
_BUNDLE_MAX: Final = 1 << 28


class _Contexts(threading.local):
    """Zstandard's compressor and decompressor, one each per thread (neither may be used
    by two threads at once)."""

    def __init__(self) -> None:
        self.compressor = zstandard.ZstdCompressor(level=_LEVEL)
        self.decompressor = zstandard.ZstdDecompressor()


_CONTEXTS: Final = _Contexts()


def pack_outbox(records: Sequence[OutputRecord]) -> bytes:
    """``records`` as one outbox entry: their frames, each after its length, compressed."""
    parts: list[bytes] = []
    for record in records:
        frame = record.to_frame()
        parts += (_LENGTH.pack(len(frame)), frame)
    return _ZSTD_BUNDLE + _CONTEXTS.compressor.compress(b"".join(parts))


def unpack_outbox(entry: bytes) -> list[OutputRecord]:
    """The records of an outbox entry (a bundle, or one frame as earlier versions
    stored them); ValueError if it is neither.

    >>> unpack_outbox(_ZSTD_BUNDLE + b"not zstd")
    Traceback (most recent call last):
    ...
    ValueError: unreadable outbox entry: cannot get frame parameters: Unknown frame descriptor
    >>> unpack_outbox(_BUNDLE + b"not zlib")
    Traceback (most recent call last):
    ...
    ValueError: unreadable outbox entry: Error -3 while decompressing data: incorrect header check
    >>> unpack_outbox(bytes(1))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unreadable outbox entry: unpack_from requires a buffer of at least 7 bytes ...
    """
    try:
        if entry[:1] == _ZSTD_BUNDLE:
            size = zstandard.get_frame_parameters(entry[1:]).content_size
            if size > _BUNDLE_MAX:
                raise ValueError(f"unreadable outbox entry: a bundle of {size} bytes")
            data = _CONTEXTS.decompressor.decompress(entry[1:], allow_extra_data=False)
        elif entry[:1] == _BUNDLE:
            data = zlib.decompress(entry[1:])
        else:
            return [OutputRecord.from_frame(entry)]
        out, at = [], 0
        while at < len(data):
            (n,) = _LENGTH.unpack_from(data, at)
            at += _LENGTH.size
            out.append(OutputRecord.from_frame(data[at : at + n]))
            at += n
    except (zlib.error, struct.error, zstandard.ZstdError) as exc:
        raise ValueError(f"unreadable outbox entry: {exc}") from None
    return out


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
