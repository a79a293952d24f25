"""How a packed user state's body is compressed: Zstandard at level 1 with a dictionary
trained on state bodies (:data:`DICTIONARY_FILE`), instead of the raw deflate earlier
versions wrote.

A state is compressed at every save and decompressed at every load of its user, so the
compressor is on the per-event path of every workload: deflate (zlib level 1) took 11% of
a replay's CPU, dense or sparse (docs/performance.md, "The state body compressed with a
dictionary"). A body is a few hundred bytes to a few KiB of 64-bit words and doubles in a
fixed order; the dictionary holds what every body shares (the header's shapes, the
words' high bytes, zeros where a user has no events of a type, the whole numbers decayed
counts start from), so a body's own bytes are all that is left to code. Zstandard with
it writes a body in about a tenth of deflate's time and 10-20% smaller.

The dictionary is part of the format: a body compressed with it can be read only with
the same bytes, so the file never changes once released (its SHA-256 is checked at
import: :data:`DICTIONARY_SHA256`); a new dictionary is a new state format, the old one
kept to read. ``python -m tests.bench.state_dictionary`` trains it again, byte for byte,
from the generator's streams.

>>> body = bytes(range(40)) * 10
>>> packed = compress(body)
>>> len(packed) < len(body), decompress(packed, limit=4096) == body
(True, True)
>>> decompress(packed + b"!", limit=4096)
Traceback (most recent call last):
...
ValueError: corrupt user state: compressed input contains 1 bytes of unused data, ...
>>> decompress(packed, limit=100)
Traceback (most recent call last):
...
ValueError: corrupt user state: longer than any state
"""

from __future__ import annotations

import hashlib
import threading
import zlib
from importlib.resources import files
from typing import Final

import zstandard

__all__ = [
    "DICTIONARY_FILE",
    "DICTIONARY_SHA256",
    "compress",
    "compressor",
    "decompress",
    "dictionary",
    "inflate",
]

#: The dictionary, beside this module (package data).
DICTIONARY_FILE: Final = "state_dictionary.zdict"
#: Its bytes' SHA-256: a state written with it can only be read with the same bytes.
DICTIONARY_SHA256: Final = "801c9c1bedc95e8ec31ce3605af3cf8b8e034f7efd1c78def5ea1d9775d8edb7"
#: Zstandard's level 1 (its fastest standard level; 3 writes 1-2% fewer bytes in a
#: quarter more time). No magic number, dictionary id or checksum in the frame (the
#: state's header says what it is, and a damaged body fails to decode or to pass the
#: state's checks); the body's length is in it, so a reader can refuse a frame that
#: claims more than any state before allocating it.
LEVEL: Final = 1
_FORMAT: Final = zstandard.FORMAT_ZSTD1_MAGICLESS
#: The largest window a frame may ask of the reader (a body is smaller still).
_MAX_WINDOW: Final = 1 << 20
#: Raw deflate's window in the formats that used it (2 KiB).
_DEFLATE_WINDOW_BITS: Final = 11


_PARAMETERS: Final = zstandard.ZstdCompressionParameters.from_level(
    LEVEL, format=_FORMAT, write_content_size=1, write_checksum=0, write_dict_id=0
)


def dictionary(data: bytes) -> zstandard.ZstdCompressionDict:
    """The dictionary of ``data`` (a trained, full dictionary's bytes)."""
    return zstandard.ZstdCompressionDict(data, dict_type=zstandard.DICT_TYPE_FULLDICT)


def compressor(with_dictionary: zstandard.ZstdCompressionDict) -> zstandard.ZstdCompressor:
    """A compressor of bodies as formats 4 and 5 store them, with ``with_dictionary``
    (the packaged one, or one being trained: ``tests/bench/state_dictionary.py``)."""
    return zstandard.ZstdCompressor(dict_data=with_dictionary, compression_params=_PARAMETERS)


def _load_dictionary() -> zstandard.ZstdCompressionDict:
    data = files("online_models").joinpath(DICTIONARY_FILE).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != DICTIONARY_SHA256:
        raise RuntimeError(
            f"online_models/{DICTIONARY_FILE} is not the dictionary user states are written "
            f"with (SHA-256 {digest}, expected {DICTIONARY_SHA256}): restore it from the "
            "release; states compressed with it cannot be read with any other"
        )
    packaged = dictionary(data)
    packaged.precompute_compress(compression_params=_PARAMETERS)
    return packaged


_DICTIONARY: Final = _load_dictionary()


class _Contexts(threading.local):
    """A compressor and a decompressor per thread (neither may be used by two threads
    at once); made on a thread's first use, from the dictionary's precomputed tables."""

    def __init__(self) -> None:
        self.compressor = compressor(_DICTIONARY)
        self.decompressor = zstandard.ZstdDecompressor(
            dict_data=_DICTIONARY, max_window_size=_MAX_WINDOW, format=_FORMAT
        )


_CONTEXTS: Final = _Contexts()


def compress(body: bytes) -> bytes:
    """``body`` compressed as the packed states of formats 4 and 5 store it."""
    return _CONTEXTS.compressor.compress(body)


def decompress(data: bytes, *, limit: int) -> bytes:
    """The body :func:`compress` made ``data`` of; ValueError if ``data`` is not one
    whole frame of at most ``limit`` bytes (checked from the frame's header, before
    anything is allocated)."""
    try:
        size = zstandard.get_frame_parameters(data, format=_FORMAT).content_size
        if size > limit:
            raise ValueError("corrupt user state: longer than any state")
        return _CONTEXTS.decompressor.decompress(data, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        why = "truncated" if "did not decompress full frame" in str(exc) else str(exc)
        raise ValueError(f"corrupt user state: {why}") from None


def inflate(data: bytes, *, limit: int) -> bytes:
    """A body of formats 2 and 3 (raw deflate, what earlier versions wrote); ValueError
    if ``data`` is not one whole deflate stream of at most ``limit`` bytes.

    >>> d = zlib.compressobj(1, zlib.DEFLATED, -11)
    >>> inflate(d.compress(b"state") + d.flush(), limit=64)
    b'state'
    """
    inflater = zlib.decompressobj(-_DEFLATE_WINDOW_BITS)
    try:
        body = inflater.decompress(data, limit)
    except zlib.error as exc:
        raise ValueError(f"corrupt user state: {exc}") from None
    if inflater.unconsumed_tail:
        raise ValueError("corrupt user state: longer than any state")
    if not inflater.eof:
        raise ValueError("corrupt user state: truncated")
    if inflater.unused_data:
        raise ValueError("corrupt user state: bytes after its end")
    return body
