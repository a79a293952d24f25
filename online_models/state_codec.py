"""The bytes a user's state is stored as: a compact, versioned binary form of
:meth:`UserState.to_json`, exact to the bit.

A state is read and written for every user of every batch, and Redis keeps one per user:
its JSON text (~1-3 KB, 36-character event ids, floats spelled out in full) was most of
what the deployment costs in memory. The binary form keeps the same tree of values:

- no key names: the fields are written in the order of a numbered *layout*
  (:data:`LAYOUTS`), the names of the state's fields and of its feature block, taken
  from the code (:func:`current_layout`). A state names its layout, so a state written
  before a feature was added is still read (its missing fields are then what
  :meth:`UserFeatures.from_json` completes, as for JSON);
- each value carries its own type tag, so a field may change shape without a new
  codec: integers as varints (timestamps as the difference to the previous one when
  that is shorter), strings once then by reference;
- every float of the state in one section: a bitmap of the ones that are not 0.0 (most
  decayed counts are), and each of those as a one-byte code: a small whole number, or
  the index of its value in the state's pool of distinct floats, written once as its 8
  IEEE-754 bytes (equal sums, snapshots taken at one moment and so with one vector
  share them). Every float reads back bit for bit, so every decision is what it would
  be from JSON. The section is built and read with a few calls into C (``struct``,
  ``dict.fromkeys``, ``map``): a state is encoded and decoded for every user of every
  batch;
- the dedup window's event-id digests (:func:`~online_models.user_state.event_key`) as
  raw 8-byte strings.

Any layout and any value is written and read by a walk over that tree (``_Writer``,
``_Reader``): the *tagged* form (format 1). The states the code makes are written in a
*packed* form (format 4) instead: the same values without tags, in two ``struct`` calls,
compressed by Zstandard with a dictionary trained on such bodies
(:mod:`~online_models.state_compression`; ``_encode_packed``, ``_decode_packed``). A
pending snapshot taken since the user's last event leaves its vector out (format 5: it
is ``vector(features, t)`` of the stored features, made again when needed): a silent
user's state is then about half as long. Formats 2 and 3 are the same, raw-deflated, as
earlier versions wrote them: still read. It reads back the same state as the tagged form
of the same state (tests/unit/test_state_codec.py compares them); a state of another
shape is written in the tagged form. Tagged states
of the current layout (what earlier versions wrote) are read by a path unrolled for
them (``_decode_fast``), which hands whatever it does not expect to the walk.

>>> from online_models.event import Event
>>> s = UserState.new()
>>> s.features.apply(Event("e1", "u", "purchase", 1_767_225_600_000, 19.99))
>>> s.remember("e1")
>>> raw = encode_state(s)
>>> raw[:1] == MAGIC, len(raw) < len(orjson.dumps(s.to_json())) // 3
(True, True)
>>> decode_state(raw).to_json() == s.to_json()
True

A state stored as JSON (first byte ``{``, what earlier versions wrote) is still read, so
a rolling upgrade meets old states without a migration; they are rewritten in binary
the next time their user is saved:

>>> decode_state(orjson.dumps(s.to_json())).to_json() == s.to_json()
True

Bytes that are neither raise ValueError (the caller sets the user aside, as for any
unusable state):

>>> decode_state(raw[:-3])
Traceback (most recent call last):
...
ValueError: corrupt user state: truncated
"""

from __future__ import annotations

import math
import struct
from collections import deque
from functools import lru_cache
from itertools import compress, filterfalse
from typing import Any, Final, cast

import orjson

from online_models import state_compression
from online_models.feature_vector import FEATURE_NAMES
from online_models.features import HALF_LIVES_DAYS, UserFeatures, possible
from online_models.user_state import (
    DEDUP_WINDOW,
    STATE_VERSION,
    Recomputable,
    UserState,
    current_snapshots,
)

__all__ = [
    "LAYOUTS",
    "MAGIC",
    "current_layout",
    "decode_state",
    "encode_state",
    "state_json",
]

#: The first byte of a binary state. Never the first byte of a JSON object (``{``), nor
#: of any UTF-8 text: the two forms cannot be mistaken for each other.
MAGIC: Final = b"\xa7"
#: The version of the value encoding below (tags, float items); the layout is numbered apart.
FORMAT: Final = 1

#: A layout: the state's field names in encoding order; a nested block (the features)
#: as ``(name, its field names)``.
Layout = tuple[str | tuple[str, tuple[str, ...]], ...]

#: Every layout a state was ever written with, by number, never changed once released:
#: a new field in :class:`UserState` or :class:`UserFeatures` makes a new layout, which
#: is added here with the next number (tests/unit/test_state_codec.py says so when one
#: is missing), and the older ones stay readable.
LAYOUTS: Final[dict[int, Layout]] = {
    1: (
        (
            "features",
            (
                "last_ms",
                "first_ms",
                "last_purchase_ms",
                "counts",
                "spend",
                "refunded",
                "sessions",
                "events",
                "purchases",
                "refunds",
                "carts",
                "total_spend",
                "total_refunded",
                "first_purchase_ms",
                "categories",
            ),
        ),
        "tier",
        "seq",
        "tier_since_ms",
        "recent_digests",
        "pending",
        "learned_ms",
        "rescored_ms",
        "due_ms",
        "born_ms",
    ),
}

# Value tags. A byte below _T_NONE is a small integer itself.
_SMALL_INT_END: Final = 0x40
_T_NONE, _T_TRUE, _T_FALSE, _T_MINUS_ONE = 0x40, 0x41, 0x42, 0x43
_T_INT, _T_DELTA, _T_FLOAT, _T_STR, _T_STR_REF = 0x44, 0x45, 0x46, 0x47, 0x48
_T_BYTES, _T_LIST, _T_FLOATS, _T_KEYS = 0x49, 0x4A, 0x4B, 0x4C
#: Float codes past the pool's: the whole numbers 0 .. _SMALL_FLOATS - 1 (counts,
#: category buckets, ones and zeros of the vectors), which need no pool entry.
_SMALL_FLOATS: Final = 64
_SMALL_FLOAT_VALUES: Final = tuple(float(i) for i in range(_SMALL_FLOATS))
#: Codes are one byte while the pool and the small numbers fit in 256, else two.
_BYTE_CODES: Final = 256 - _SMALL_FLOATS
#: Nesting of lists a state has (pending snapshots hold a vector), with room to spare;
#: deeper bytes are not a state.
_MAX_DEPTH: Final = 4
_VARINT_MAX_BYTES: Final = 10
_KEY_BYTES: Final = 8
_FLOAT_ONLY: Final = frozenset((float,))
_BYTES_ONLY: Final = frozenset((bytes,))
_TO_DIGITS: Final = bytes.maketrans(b"\x00\x01", b"01")
#: The whole numbers that have codes of their own (0.0 is never coded: it is a bit).
_SMALL_WHOLE: Final = frozenset(_SMALL_FLOAT_VALUES[1:])


def current_layout() -> Layout:
    """The layout of the state the code writes today: its :meth:`UserState.fields`
    keys (the version apart: it is the header's), a block's keys nested.

    >>> current_layout() == LAYOUTS[max(LAYOUTS)]
    True
    """
    out: list[str | tuple[str, tuple[str, ...]]] = []
    for key, value in UserState.new().fields().items():
        if key != "v":
            out.append((key, tuple(value)) if isinstance(value, dict) else key)
    return tuple(out)


def _layout_number() -> int:
    layout = current_layout()
    for number, known in LAYOUTS.items():
        if known == layout:
            return number
    raise RuntimeError(
        f"the user state's fields changed: add LAYOUTS[{max(LAYOUTS) + 1}] = {layout!r} "
        "to online_models/state_codec.py"
    )


_CURRENT: Final = _layout_number()


def encode_state(state: UserState) -> bytes:
    """The bytes to store for ``state`` (:func:`decode_state` reads them back): the
    packed form, or the tagged one for a state of a shape the packed form does not hold
    (the header, the float section, then the layout's values with the floats taken out)."""
    if _CURRENT == _FAST_LAYOUT:
        try:
            return _encode_packed(state)
        except _Unusual:
            pass
    return _encode_tree(state)


def _encode_tree(state: UserState) -> bytes:
    """:func:`encode_state` by the generic walk: any layout, any value a state may hold."""
    data = state.fields()
    fields: list[Any] = []
    for entry in LAYOUTS[_CURRENT]:
        if isinstance(entry, tuple):
            block = data[entry[0]]
            fields += [block[key] for key in entry[1]]
        else:
            fields.append(data[entry])
    w = _Writer()
    w.values(fields)
    head = _Writer()
    head.out += MAGIC
    head.out.append(FORMAT)
    head.varint(_CURRENT)
    head.float_section(w.floats)
    return bytes(head.out + w.out)


def decode_state(raw: bytes) -> UserState:
    """The state stored as ``raw``, binary or JSON. Raises ValueError when the bytes are
    not a state this code can apply (corrupt, truncated, of an unknown layout, or a
    state whose values :meth:`UserState.from_json` refuses).

    >>> decode_state(b"\\xa7\\x01\\x63")
    Traceback (most recent call last):
    ...
    ValueError: corrupt user state: unknown layout 99 (written by a newer version?)
    """
    if raw[:2] in _PACKED_FORMS:
        return _decode_packed(raw)
    if raw[:3] == _FAST_HEAD:
        try:
            return _decode_fast(raw)
        except Exception:  # anything unusual, even bad bytes: the generic walk says what
            pass
    try:
        if raw[:1] == b"{":
            return UserState.from_json(orjson.loads(raw))
        return UserState.from_json(_read_tree(raw))
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"unusable user state: {exc!r}") from exc


def state_json(raw: bytes) -> dict[str, Any]:
    """The stored state ``raw`` as JSON-able data, for people and tools.

    >>> state_json(encode_state(UserState.new()))["seq"]
    0
    """
    return decode_state(raw).to_json()


def _read_tree(raw: bytes) -> dict[str, Any]:
    if raw[:1] != MAGIC:
        raise ValueError(f"corrupt user state: starts with {bytes(raw[:1])!r}, not a state")
    r = _Reader(raw)
    try:
        r.pos = 1
        if r.byte() != FORMAT:
            raise ValueError(f"corrupt user state: unknown format {raw[1]}")
        number = r.varint()
        layout = LAYOUTS.get(number)
        if layout is None:
            raise ValueError(
                f"corrupt user state: unknown layout {number} (written by a newer version?)"
            )
        r.float_section()
        values = iter(r.values(_field_count(layout), 0))
        data: dict[str, Any] = {"v": STATE_VERSION}
        for entry in layout:
            if isinstance(entry, tuple):
                data[entry[0]] = dict(zip(entry[1], values, strict=False))
            else:
                data[entry] = next(values)
    except (IndexError, struct.error, StopIteration):
        raise ValueError("corrupt user state: truncated") from None
    if r.pos != len(raw) or r.next_float != len(r.floats):
        raise ValueError("corrupt user state: bytes or floats after its end")
    return data


class _Writer:
    """Appends tagged values; the floats are collected apart (:meth:`float_section`)."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.floats: list[float] = []
        self.strings: dict[str, int] = {}
        self.last_int = 0

    def varint(self, n: int) -> None:
        _varint(self.out, n)

    def values(self, items: list[Any]) -> None:
        """Each of ``items``, tagged; the floats go to :attr:`floats`."""
        out, floats = self.out, self.floats
        for v in items:
            kind = type(v)
            if kind is int:
                if 0 <= v < _SMALL_INT_END:
                    out.append(v)
                elif v == -1:
                    out.append(_T_MINUS_ONE)
                else:
                    self.integer(v)
            elif kind is list:
                self.sequence(v)
            elif kind is float:
                out.append(_T_FLOAT)
                floats.append(v)
            elif v is None:
                out.append(_T_NONE)
            elif kind is str:
                self.string(v)
            elif kind is bool:
                out.append(_T_TRUE if v else _T_FALSE)
            elif kind is bytes:
                out.append(_T_BYTES)
                self.varint(len(v))
                out += v
            else:
                raise TypeError(f"a user state holds no {kind.__name__}: {v!r}")

    def sequence(self, v: list[Any]) -> None:
        out = self.out
        kinds = set(map(type, v))
        if kinds == _FLOAT_ONLY:
            out.append(_T_FLOATS)
            if len(v) < 0x80:
                out.append(len(v))
            else:
                self.varint(len(v))
            self.floats += v
        elif kinds == _BYTES_ONLY and all(len(k) == _KEY_BYTES for k in v):
            out.append(_T_KEYS)
            self.varint(len(v))
            out += b"".join(v)
        else:
            out.append(_T_LIST)
            self.varint(len(v))
            self.values(v)

    def integer(self, n: int) -> None:
        """An integer past the one-byte forms: zigzag varint, of itself or of its
        difference to the previous such integer (timestamps lie close), the shorter."""
        if not _INT_MIN <= n < _INT_END:
            raise ValueError(f"a user state's integer out of 64 bits: {n}")
        _put_wide_int(self.out, n, self.last_int)
        self.last_int = n

    def string(self, s: str) -> None:
        ref = self.strings.get(s)
        if ref is not None:
            self.out.append(_T_STR_REF)
            self.varint(ref)
            return
        self.strings[s] = len(self.strings)
        data = s.encode("utf-8", "surrogatepass")
        self.out.append(_T_STR)
        self.varint(len(data))
        self.out += data

    def float_section(self, floats: list[float]) -> None:
        """``floats``: how many, the pool of distinct values (IEEE-754), the bitmap of
        the ones that are not +0.0, and the code of each of those."""
        n = len(floats)
        packed = struct.pack(f"<{n}d", *floats)
        present = struct.pack(f"<{n}?", *floats)  # 1 where a float is true (not +-0.0)
        if 0x80 in packed[7::8]:  # maybe a -0.0 (false, yet kept: it must come back so)
            present = bytes(bool(v) or math.copysign(1.0, v) < 0 for v in floats)
        kept = list(compress(floats, present))
        pool = list(filterfalse(_SMALL_WHOLE.__contains__, dict.fromkeys(kept)))
        codes = _small_codes(len(pool)).copy()
        # After the small numbers: a -0.0 in the pool takes 0.0's key. A NaN is found by
        # identity only, so each NaN object of the state is an entry of its own.
        codes.update(zip(pool, range(len(pool)), strict=True))
        self.varint(n)
        self.varint(len(pool))
        out = self.out
        out += struct.pack(f"<{len(pool)}d", *pool)
        out += int(present.translate(_TO_DIGITS) or b"0", 2).to_bytes((n + 7) // 8, "little")
        if len(pool) <= _BYTE_CODES:
            out += bytes(map(codes.__getitem__, kept))
        else:
            out += struct.pack(f"<{len(kept)}H", *map(codes.__getitem__, kept))


@lru_cache(maxsize=_BYTE_CODES + 1)
def _small_codes(pooled: int) -> dict[float, int]:
    """The codes of the small whole numbers after a pool of ``pooled`` floats (a copy
    is what a state's codes start from)."""
    return dict(zip(_SMALL_FLOAT_VALUES, range(pooled, pooled + _SMALL_FLOATS), strict=True))


class _Reader:
    """Reads what :class:`_Writer` wrote; IndexError or struct.error when it ends early."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.floats: list[float] = []
        self.next_float = 0
        self.strings: list[str] = []
        self.last_int = 0

    def byte(self) -> int:
        b = self.data[self.pos]
        self.pos += 1
        return b

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise IndexError("truncated")
        chunk = self.data[self.pos : end]
        self.pos = end
        return bytes(chunk)

    def varint(self) -> int:
        data, pos = self.data, self.pos
        b = data[pos]
        if b < 0x80:
            self.pos = pos + 1
            return b
        n = b & 0x7F
        for shift in range(7, 7 * _VARINT_MAX_BYTES, 7):
            pos += 1
            b = data[pos]
            n |= (b & 0x7F) << shift
            if b < 0x80:
                self.pos = pos + 1
                return n
        raise ValueError("corrupt user state: a varint longer than 10 bytes")

    def count(self, item_bytes: float) -> int:
        """A length that the remaining bytes can hold (hostile bytes allocate nothing big)."""
        n = self.varint()
        if n * item_bytes > len(self.data) - self.pos:
            raise IndexError("truncated")
        return n

    def float_section(self) -> None:
        n = self.count(1 / 8)
        pooled = self.count(8)
        table = [*struct.unpack(f"<{pooled}d", self.take(8 * pooled)), *_SMALL_FLOAT_VALUES]
        digits = format(int.from_bytes(self.take((n + 7) // 8), "little"), f"0{n}b")
        if len(digits) > n:
            raise ValueError("corrupt user state: a float bitmap longer than its floats")
        kept = digits.count("1")
        if pooled <= _BYTE_CODES:
            codes: Any = self.take(kept)
        else:
            codes = struct.unpack(f"<{kept}H", self.take(2 * kept))
        try:
            nxt = map(table.__getitem__, codes).__next__
            self.floats = [nxt() if d == "1" else 0.0 for d in digits] if n else []
        except IndexError:
            raise ValueError("corrupt user state: a float code out of its pool") from None

    def values(self, n: int, depth: int) -> list[Any]:
        """``n`` values; lists within are read by a call one level deeper."""
        if depth > _MAX_DEPTH:
            raise ValueError("corrupt user state: lists nested too deep")
        data, floats = self.data, self.floats
        small, t_int, t_delta, t_floats = _SMALL_INT_END, _T_INT, _T_DELTA, _T_FLOATS
        out: list[Any] = []
        append = out.append
        for _ in range(n):
            tag = data[self.pos]
            self.pos += 1
            if tag < small:
                append(tag)
            elif t_int <= tag <= t_delta:
                z = self.varint()
                z = z >> 1 if not z & 1 else -(z >> 1) - 1
                self.last_int = z if tag == t_int else self.last_int + z
                append(self.last_int)
            elif tag == t_floats:
                start = self.next_float
                self.next_float = end = start + self.varint()
                if end > len(floats):
                    raise ValueError("corrupt user state: more floats than its section holds")
                append(floats[start:end])
            else:
                append(self.other(tag, depth))
        return out

    def other(self, tag: int, depth: int) -> Any:
        """A value of the rarer tags."""
        if tag == _T_MINUS_ONE:
            return -1
        if tag == _T_LIST:
            return self.values(self.count(1), depth + 1)
        if tag == _T_FLOAT:
            self.next_float += 1
            return self.floats[self.next_float - 1]
        if tag == _T_KEYS:
            blob = self.take(self.count(_KEY_BYTES) * _KEY_BYTES)
            return [blob[i : i + _KEY_BYTES] for i in range(0, len(blob), _KEY_BYTES)]
        return self.scalar(tag)

    def scalar(self, tag: int) -> Any:
        if tag == _T_MINUS_ONE:
            return -1
        if tag == _T_NONE:
            return None
        if tag == _T_STR:
            s = self.take(self.count(1)).decode("utf-8", "surrogatepass")
            self.strings.append(s)
            return s
        if tag == _T_STR_REF:
            i = self.varint()
            if i >= len(self.strings):
                raise ValueError("corrupt user state: a reference to a string not in the state")
            return self.strings[i]
        if tag in (_T_TRUE, _T_FALSE):
            return tag == _T_TRUE
        if tag == _T_BYTES:
            return self.take(self.count(1))
        raise ValueError(f"corrupt user state: unknown tag {tag:#04x} at byte {self.pos - 1}")


def _field_count(layout: Layout) -> int:
    return sum(len(e[1]) if isinstance(e, tuple) else 1 for e in layout)


# The fast paths: the walk above, unrolled for the layout the code writes today and the
# value shapes its states have (floats in lists of floats, snapshots of eight items that
# start with their horizon, ...). They write and read the same bytes as the walk, which remains the
# reference: anything else (an older layout, a value of another shape, damaged bytes) is
# handed to it, which then writes it or says what is wrong.

#: The layout the fast paths are written for (tests/unit/test_state_codec.py says when it
#: is no longer the current one).
_FAST_LAYOUT: Final = 1
_FAST_HEAD: Final = MAGIC + bytes((FORMAT, _FAST_LAYOUT))
_INT_MIN, _INT_END = -(2**63), 2**63


class _Unusual(Exception):
    """A value the fast paths leave to the generic walk."""


def _varint(out: bytearray, n: int) -> None:
    """Appends ``n`` (>= 0) as a varint: 7 bits a byte, low bits first."""
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _put_wide_int(out: bytearray, n: int, last: int) -> None:
    """An integer past the one-byte forms (within 64 bits): the zigzag varint of itself
    or of its difference to ``last``, the previous such integer (timestamps lie close),
    whichever is shorter, after its tag."""
    plain = n * 2 if n >= 0 else -n * 2 - 1
    d = n - last
    delta = d * 2 if d >= 0 else -d * 2 - 1
    if (delta.bit_length() + 6) // 7 < (plain.bit_length() + 6) // 7:
        out.append(_T_DELTA)
        _varint(out, delta)
    else:
        out.append(_T_INT)
        _varint(out, plain)


_SNAPSHOT_ITEMS: Final = 8
_SNAPSHOT_HEAD: Final = bytes((_T_LIST, _SNAPSHOT_ITEMS))


# The packed form (format 2, and 4 as written now), what encode_state writes. The tagged
# form above is read and written by a Python loop over its values (a few dozen calls a
# state, the larger part of a touch's CPU on states with snapshots); the packed form
# holds the values of the current layout without tags: the integers as 64-bit words and
# the floats as IEEE-754 doubles, each group packed by one ``struct`` call, the whole
# compressed (the words' high bytes, the zeros and the floats a state repeats, such as
# the vector two snapshots of one moment share, are what it takes out). It holds the
# shapes the code makes (lists of floats, snapshots of eight items, ...) and no -0.0 (its
# reader makes every zero one shared 0.0 object, as the tagged form's pool did: a batch
# holds thousands of states, mostly zeros); a state of any other shape is written in the
# tagged form, which stays readable, as do states written by earlier versions in it.
#
# After the head: the number of dedup digests and the digests (random bytes: left out
# of the compressed part), then the compressed body: seven bytes (flags; snapshots; the
# count rows and their width; the half-lives; the category buckets; the snapshot
# vectors' length), the integers, the floats, the tier, and per snapshot a byte of
# flags and its tier.
#
# Format 3 is format 2 whose snapshots may leave out their vector: one taken since the
# user's last event is ``vector(features, t)`` of the stored features (a
# :class:`~online_models.user_state.Recomputable`), so a flag of the snapshot says so and
# the reader leaves None in its place (made again when needed). Two thirds of a silent
# user's body are such vectors. Its header has an eighth byte, the number of snapshots
# that keep their vector. A state with none left out is written in format 2 (4 since
# the dictionary below).
#
# Formats 2 and 3 raw-deflate the body (zlib level 1, a 2 KiB window); formats 4 and 5
# are the same bodies compressed by Zstandard with a dictionary trained on them
# (online_models/state_compression.py), in a tenth of the CPU and 10-20% fewer bytes.
# The code writes 4 and 5 and reads all four.

#: The format numbers of the packed form and of the packed form that may leave out
#: snapshots' vectors, as written now: formats 2 and 3 with the body compressed by
#: :mod:`~online_models.state_compression` (Zstandard and a dictionary; formats 4 and 5).
PACKED: Final = 4
PACKED_LEAN: Final = 5
#: The same, raw-deflated: what earlier versions wrote, still read.
DEFLATED_PACKED: Final = 2
DEFLATED_LEAN: Final = 3
_LEAN_FORMATS: Final = frozenset((PACKED_LEAN, DEFLATED_LEAN))
_PACKED_FORMS: Final = frozenset(
    MAGIC + bytes((f,)) for f in (PACKED, PACKED_LEAN, DEFLATED_PACKED, DEFLATED_LEAN)
)
_PACKED_HEAD: Final = MAGIC + bytes((PACKED, _FAST_LAYOUT))
_LEAN_HEAD: Final = MAGIC + bytes((PACKED_LEAN, _FAST_LAYOUT))
_HEADER: Final = struct.Struct("<7B")
_LEAN_HEADER: Final = struct.Struct("<8B")
#: Integers of the state outside its snapshots, and of each snapshot.
_STATE_INTS, _SNAPSHOT_INTS = 14, 4
#: Floats of a snapshot besides its vector: its propensity and the spend since.
_SNAPSHOT_FLOATS = 2
#: Header flags: no last purchase, no first purchase, no snapshot list, no tier; and of
#: a snapshot: no propensity yet, no tier.
_NO_LAST_PURCHASE, _NO_FIRST_PURCHASE, _NO_PENDING, _NO_TIER = 1, 2, 4, 8
_NO_P, _NO_SNAPSHOT_TIER = 1, 2
#: A snapshot flag of formats 3 and 5: its vector is left out (made again from the
#: features).
_MADE_AGAIN = 4
#: A body is never longer (a state is some hundreds of bytes): damaged bytes cannot make
#: the reader allocate more.
_BODY_MAX: Final = 1 << 20
#: The top bytes of a little-endian double whose sign bit is clear (deleted by translate).
_SIGN_CLEAR: Final = bytes(range(0x80))
_INT_ONLY: Final = frozenset((int,))
_MAX_COUNT: Final = 0xFF
#: The length of today's feature vectors (a snapshot's of another length is dropped).
_VECTOR_DIM: Final = len(FEATURE_NAMES)


@lru_cache(maxsize=64)
def _values(ints: int, floats: int) -> struct.Struct:
    """The packing of ``ints`` integers then ``floats`` floats."""
    return struct.Struct(f"<{ints}q{floats}d")


def _put_name(out: bytearray, name: Any) -> None:
    """A tier name: its UTF-8 length (one byte) and bytes."""
    if type(name) is not str:
        raise _Unusual
    data = name.encode("utf-8", "surrogatepass")
    if len(data) > _MAX_COUNT:
        raise _Unusual
    out.append(len(data))
    out += data


def _feature_floats(f: UserFeatures) -> tuple[list[Any], tuple[int, int, int, int]]:
    """The feature block's floats in layout order, and its shape: (count rows, their
    width, half-lives, category buckets); _Unusual when it is not lists of floats."""
    counts = f.counts
    if type(counts) is not list or not counts or type(counts[0]) is not list:
        raise _Unusual
    width = len(counts[0])
    floats: list[Any] = []
    for row in counts:
        if type(row) is not list or len(row) != width:
            raise _Unusual
        floats += row
    spend, refunded, sessions, categories = f.spend, f.refunded, f.sessions, f.categories
    halves = len(spend) if type(spend) is list else -1
    if not (
        type(refunded) is list
        and type(sessions) is list
        and type(categories) is list
        and len(refunded) == len(sessions) == halves
    ):
        raise _Unusual
    floats += spend
    floats += refunded
    floats += sessions
    floats.append(f.total_spend)
    floats.append(f.total_refunded)
    floats += categories
    return floats, (len(counts), width, halves, len(categories))


def _put_snapshots(
    pending: list[Any], ints: list[Any], floats: list[Any], tail: bytearray
) -> tuple[int, int]:
    """Each snapshot's integers, floats, flags and tier; the length of their vectors and
    how many keep theirs (the others are left out: made again from the features)."""
    dim = kept = 0
    for snap in pending:
        if type(snap) is not list or len(snap) != _SNAPSHOT_ITEMS:
            raise _Unusual
        horizon, t, x, p, purchases, events, tier, spent = snap
        ints += (horizon, t, purchases, events)
        if type(x) is list:
            if not x or (dim and len(x) != dim):
                raise _Unusual
            dim = len(x)
            kept += 1
            floats += x
            item = 0
        elif x is None or type(x) is Recomputable:
            item = _MADE_AGAIN
        else:
            raise _Unusual
        if p is None:
            item |= _NO_P
            p = 0.0
        floats.append(p)
        floats.append(spent)
        if tier is None:
            tail.append(item | _NO_SNAPSHOT_TIER)
        else:
            tail.append(item)
            _put_name(tail, tier)
    if kept < len(pending):  # a left-out vector is of today's length
        if dim not in (0, _VECTOR_DIM):
            raise _Unusual
        dim = _VECTOR_DIM
    return dim, kept


def _encode_packed(state: UserState) -> bytes:
    """:func:`encode_state` in the packed form; _Unusual when a value is not of the
    shapes it holds (the tagged form then writes it)."""
    f = state.features
    floats, shape = _feature_floats(f)
    flags = 0
    last_purchase, first_purchase = f.last_purchase_ms, f.first_purchase_ms
    if last_purchase is None:
        flags |= _NO_LAST_PURCHASE
        last_purchase = 0
    if first_purchase is None:
        flags |= _NO_FIRST_PURCHASE
        first_purchase = 0
    ints = [
        f.last_ms,
        f.first_ms,
        last_purchase,
        f.events,
        f.purchases,
        f.refunds,
        f.carts,
        first_purchase,
        state.seq,
        state.tier_since_ms,
        state.learned_ms,
        state.rescored_ms,
        state.due_ms,
        state.born_ms,
    ]
    keys = state.recent_ids
    if keys and (set(map(type, keys)) != _BYTES_ONLY or set(map(len, keys)) != {_KEY_BYTES}):
        raise _Unusual
    tail = bytearray()
    if state.tier is None:
        flags |= _NO_TIER
    else:
        _put_name(tail, state.tier)
    pending = state.pending
    if pending is None:
        flags |= _NO_PENDING
        pending = []
    elif type(pending) is not list:
        raise _Unusual
    dim, kept = _put_snapshots(pending, ints, floats, tail)
    sizes = (len(pending), *shape, dim)
    if max(*sizes, len(keys)) > _MAX_COUNT:
        raise _Unusual
    if set(map(type, ints)) != _INT_ONLY or set(map(type, floats)) != _FLOAT_ONLY:
        raise _Unusual
    try:
        values = _values(len(ints), len(floats)).pack(*ints, *floats)
    except struct.error:  # an integer past 64 bits: the tagged form says so
        raise _Unusual from None
    if 0x80 in values[8 * len(ints) + 7 :: 8] and any(
        v == 0.0 and math.copysign(1.0, v) < 0 for v in floats
    ):
        raise _Unusual  # a -0.0: the reader makes every zero one 0.0
    if kept == len(pending):
        head, body = _PACKED_HEAD, _HEADER.pack(flags, *sizes) + values + tail
    else:
        head, body = _LEAN_HEAD, _LEAN_HEADER.pack(flags, *sizes, kept) + values + tail
    return head + bytes((len(keys),)) + b"".join(keys) + state_compression.compress(body)


def _decode_packed(raw: bytes) -> UserState:
    """:func:`decode_state` of the packed form; ValueError when the bytes are damaged."""
    keys, body = _packed_parts(raw)
    try:
        return _unpack(body, keys, raw[1] in _LEAN_FORMATS)
    except (struct.error, IndexError):
        raise ValueError("corrupt user state: truncated") from None


def packed_body(raw: bytes) -> bytes | None:
    """The body of a packed state (any packed format), decompressed: what the encoder
    compresses; None for a state stored in another form. ValueError when damaged.

    >>> packed_body(encode_state(UserState.new()))[:1], packed_body(b"{}") is None
    (b'\\x0f', True)
    """
    return _packed_parts(raw)[1] if raw[:2] in _PACKED_FORMS else None


def _packed_parts(raw: bytes) -> tuple[list[bytes], bytes]:
    """A packed state's dedup digests and its body, decompressed; ValueError when the
    bytes are damaged."""
    head = len(_PACKED_HEAD)  # then the number of digests, and the digests
    if len(raw) <= head:
        raise ValueError("corrupt user state: truncated")
    if raw[2] != _FAST_LAYOUT:
        raise ValueError(
            f"corrupt user state: unknown layout {raw[2]} (written by a newer version?)"
        )
    start = head + 1 + _KEY_BYTES * raw[head]
    if start > len(raw):
        raise ValueError("corrupt user state: truncated")
    keys = [raw[i : i + _KEY_BYTES] for i in range(head + 1, start, _KEY_BYTES)]
    if raw[1] in (PACKED, PACKED_LEAN):
        body = state_compression.decompress(raw[start:], limit=_BODY_MAX)
    else:
        body = state_compression.inflate(raw[start:], limit=_BODY_MAX)
    return keys, body


def _name(body: bytes, pos: int) -> tuple[str, int]:
    end = pos + 1 + body[pos]
    if end > len(body):
        raise IndexError("truncated")
    return body[pos + 1 : end].decode("utf-8", "surrogatepass"), end


def _unpack(body: bytes, keys: list[bytes], lean: bool) -> UserState:
    if lean:
        header = _LEAN_HEADER
        flags, n, rows, width, halves, cats, dim, kept = header.unpack_from(body)
        if kept >= n:
            raise ValueError(f"corrupt user state: {kept} of {n} snapshots keep their vector")
        top = _NO_P | _NO_SNAPSHOT_TIER | _MADE_AGAIN
    else:
        header = _HEADER
        flags, n, rows, width, halves, cats, dim = header.unpack_from(body)
        kept, top = n, _NO_P | _NO_SNAPSHOT_TIER
    if flags > 0x0F or (flags & _NO_PENDING and n):
        raise ValueError(f"corrupt user state: header flags {flags:#04x} with {n} snapshots")
    n_ints = _STATE_INTS + _SNAPSHOT_INTS * n
    packing = _values(n_ints, rows * width + 3 * halves + 2 + cats + 2 * n + kept * dim)
    values = packing.unpack_from(body, header.size)
    pos = header.size + packing.size
    tier = None
    if not flags & _NO_TIER:
        tier, pos = _name(body, pos)
    ints = values[:n_ints]
    # One 0.0 object for all (the constant `v or 0.0` gives; -0.0 too: the encoder
    # leaves states with one to the tagged form): a state's floats are mostly zeros, and
    # a batch holds thousands of states. (2.5x faster than a dict lookup per float.)
    fl = cast(list[float], [v or 0.0 for v in values[n_ints:]])
    counts = [fl[i : i + width] for i in range(0, rows * width, width)]
    o = rows * width
    spend, refunded = fl[o : o + halves], fl[o + halves : o + 2 * halves]
    o += 3 * halves
    sessions = fl[o - halves : o]
    total_spend, total_refunded = fl[o], fl[o + 1]
    categories = fl[o + 2 : o + 2 + cats]
    o += 2 + cats
    last_purchase = None if flags & _NO_LAST_PURCHASE else ints[2]
    first_purchase = None if flags & _NO_FIRST_PURCHASE else ints[7]
    feature_floats = fl[:o]
    # Finite and possible (as from_json checks: else it reads them and says why); no
    # float below zero read off their sign bits (a byte string's translate: a tenth of a
    # min() over the floats; a -0.0, which the encoder never writes, goes the long way).
    start = header.size + 8 * n_ints
    plain = (
        math.isfinite(sum(feature_floats))
        and not body[start + 7 : start + 8 * o : 8].translate(None, _SIGN_CLEAR)
        and possible((), ints[3:7], first_purchase, last_purchase)
    )
    pending: list[Any] | None = None if flags & _NO_PENDING else []
    left_out = 0
    for k in range(n):
        item = body[pos]
        pos += 1
        if item > top:
            raise ValueError(f"corrupt user state: snapshot flags {item:#04x}")
        snap_tier = None
        if not item & _NO_SNAPSHOT_TIER:
            snap_tier, pos = _name(body, pos)
        a = _STATE_INTS + _SNAPSHOT_INTS * k
        x: list[float] | None = None
        if item & _MADE_AGAIN:
            left_out += 1
        else:
            x = fl[o : o + dim]
            o += dim
        p = None if item & _NO_P else fl[o]
        pending.append(  # type: ignore[union-attr]  # n is 0 when there is no list
            [ints[a], ints[a + 1], x, p, ints[a + 2], ints[a + 3], snap_tier, fl[o + 1]]
        )
        o += _SNAPSHOT_FLOATS
    if left_out != n - kept:
        raise ValueError(f"corrupt user state: {left_out} vectors left out, not {n - kept}")
    # The snapshots' floats, finite (a head learns from them): their sum, and each one
    # only if the sum is not (it may be an overflow of finite ones).
    snapshot_floats = fl[len(feature_floats) :]
    if not math.isfinite(sum(snapshot_floats)) and not all(map(math.isfinite, snapshot_floats)):
        raise ValueError("corrupt user state: a snapshot holds a number that is not finite")
    if pos != len(body):
        raise ValueError("corrupt user state: bytes after its end")
    block = {
        "last_ms": ints[0],
        "first_ms": ints[1],
        "last_purchase_ms": last_purchase,
        "counts": counts,
        "spend": spend,
        "refunded": refunded,
        "sessions": sessions,
        "events": ints[3],
        "purchases": ints[4],
        "refunds": ints[5],
        "carts": ints[6],
        "total_spend": total_spend,
        "total_refunded": total_refunded,
        "first_purchase_ms": first_purchase,
        "categories": categories,
    }
    if plain and halves >= len(HALF_LIVES_DAYS):
        features = UserFeatures(**block)
        return UserState(
            features,
            tier,
            ints[8],
            ints[9],
            deque(keys, maxlen=DEDUP_WINDOW),
            # current_snapshots(pending), knowing every vector is ``dim`` long (0 when
            # there is none: an empty list reads as None, as there).
            pending=pending if dim == _VECTOR_DIM else None,
            learned_ms=ints[10],
            rescored_ms=ints[11],
            due_ms=ints[12],
            born_ms=ints[13],
        )
    # An older state's features (completed) or ones no stream could make (refused), as
    # from JSON.
    return UserState.from_json(
        {
            "v": STATE_VERSION,
            "features": block,
            "tier": tier,
            "seq": ints[8],
            "tier_since_ms": ints[9],
            "recent_digests": keys,
            "pending": pending,
            "learned_ms": ints[10],
            "rescored_ms": ints[11],
            "due_ms": ints[12],
            "born_ms": ints[13],
        }
    )


def _decode_fast(raw: bytes) -> UserState:
    """:func:`decode_state` of bytes of the current layout: the state itself, built
    without the tree :meth:`UserState.from_json` reads (what it checks is checked here:
    finite features, its snapshots' vectors); _Unusual or another exception at anything
    else, which the generic walk then reads or refuses."""
    r = _FastReader(raw)
    last_ms, first_ms, last_purchase_ms = r.whole(), r.whole(), r.integer()
    counts = r.rows()
    spend, refunded, sessions = r.float_list(), r.float_list(), r.float_list()
    events, purchases, refunds, carts = r.whole(), r.whole(), r.whole(), r.whole()
    total_spend, total_refunded = r.one_float(), r.one_float()
    first_purchase_ms = r.integer()
    categories = r.float_list()
    features_end = r.at
    if len(spend) < len(HALF_LIVES_DAYS) or not math.isfinite(sum(r.floats[:features_end])):
        raise _Unusual  # a state from_json refuses, or an older one it completes
    features = UserFeatures(
        last_ms=last_ms,
        first_ms=first_ms,
        last_purchase_ms=last_purchase_ms,
        counts=counts,
        spend=spend,
        refunded=refunded,
        sessions=sessions,
        events=events,
        purchases=purchases,
        refunds=refunds,
        carts=carts,
        total_spend=total_spend,
        total_refunded=total_refunded,
        first_purchase_ms=first_purchase_ms,
        categories=categories,
    )
    if features.impossible() is not None:
        raise _Unusual  # from_json says why
    tier = r.string()
    seq, tier_since_ms = r.whole(), r.whole()
    keys, pending = r.keys(), r.pending()
    learned_ms, rescored_ms, due_ms, born_ms = r.whole(), r.whole(), r.whole(), r.whole()
    if r.pos != len(raw) or r.at != len(r.floats):
        raise _Unusual
    if not math.isfinite(sum(r.floats[features_end:])):
        raise _Unusual  # a snapshot's NaN (or a sum's overflow): from_json says which
    return UserState(
        features,
        tier,
        seq,
        tier_since_ms,
        deque(keys, maxlen=DEDUP_WINDOW),
        pending=current_snapshots(pending),
        learned_ms=learned_ms,
        rescored_ms=rescored_ms,
        due_ms=due_ms,
        born_ms=born_ms,
    )


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it."""
    b = data[pos]
    n, shift = b & 0x7F, 7
    while b >= 0x80:
        if shift == 7 * _VARINT_MAX_BYTES:
            raise _Unusual
        pos += 1
        b = data[pos]
        n |= (b & 0x7F) << shift
        shift += 7
    return n, pos + 1


class _FastReader:
    """Reads values of the tags :func:`_encode_fast` writes where it writes them;
    _Unusual (or IndexError) at any other."""

    __slots__ = ("at", "data", "floats", "last", "pos", "strings")

    def __init__(self, data: bytes) -> None:
        head = _Reader(data)
        head.pos = len(_FAST_HEAD)
        head.float_section()
        self.data = data
        self.pos = head.pos
        self.floats = head.floats
        #: The next float of :attr:`floats`.
        self.at = 0
        self.last = 0
        self.strings: list[str] = []

    def varint(self) -> int:
        n, self.pos = _read_varint(self.data, self.pos)
        return n

    def whole(self) -> int:
        """An integer (not None)."""
        n = self.integer()
        if n is None:
            raise _Unusual
        return n

    def integer(self) -> int | None:
        """An integer or None."""
        tag = self.data[self.pos]
        self.pos += 1
        if tag < _SMALL_INT_END:
            return tag
        if tag in (_T_INT, _T_DELTA):
            z, self.pos = _read_varint(self.data, self.pos)
            z = z >> 1 if not z & 1 else -(z >> 1) - 1
            self.last = z if tag == _T_INT else self.last + z
            return self.last
        if tag == _T_MINUS_ONE:
            return -1
        if tag == _T_NONE:
            return None
        raise _Unusual

    def one_float(self) -> float:
        if self.data[self.pos] != _T_FLOAT:
            raise _Unusual
        self.pos += 1
        self.at += 1
        return self.floats[self.at - 1]

    def float_list(self) -> list[float]:
        """A list of floats (shorter than 128)."""
        data, pos = self.data, self.pos
        if data[pos] != _T_FLOATS or data[pos + 1] >= 0x80:
            raise _Unusual
        self.pos = pos + 2
        start = self.at
        self.at = end = start + data[pos + 1]
        if end > len(self.floats):
            raise _Unusual
        return self.floats[start:end]

    def rows(self) -> list[list[float]]:
        """A list of lists of floats."""
        if self.data[self.pos] != _T_LIST:
            raise _Unusual
        self.pos += 1
        return [self.float_list() for _ in range(self.varint())]

    def string(self) -> str | None:
        tag = self.data[self.pos]
        self.pos += 1
        if tag == _T_STR:
            n = self.varint()
            end = self.pos + n
            if end > len(self.data):
                raise _Unusual
            s = self.data[self.pos : end].decode("utf-8", "surrogatepass")
            self.pos = end
            self.strings.append(s)
            return s
        if tag == _T_STR_REF:
            return self.strings[self.varint()]
        if tag == _T_NONE:
            return None
        raise _Unusual

    def keys(self) -> list[bytes]:
        tag = self.data[self.pos]
        self.pos += 1
        if tag == _T_LIST and self.data[self.pos] == 0:
            self.pos += 1
            return []
        if tag != _T_KEYS:
            raise _Unusual
        n = self.varint()
        end = self.pos + _KEY_BYTES * n
        if end > len(self.data):
            raise _Unusual
        data, start = self.data, self.pos
        self.pos = end
        return [data[i : i + _KEY_BYTES] for i in range(start, end, _KEY_BYTES)]

    def pending(self) -> list[Any] | None:
        """None, or a list of lists of integers, None, floats, strings and lists of floats."""
        tag = self.data[self.pos]
        self.pos += 1
        if tag == _T_NONE:
            return None
        if tag != _T_LIST:
            raise _Unusual
        return [self.snapshot() for _ in range(self.varint())]

    def snapshot(self) -> list[Any]:
        """A snapshot as :func:`_put_pending` writes it."""
        data, pos = self.data, self.pos
        if data[pos : pos + 2] != _SNAPSHOT_HEAD:
            raise _Unusual
        self.pos = pos + 2
        horizon, t, x = self.integer(), self.integer(), self.float_list()
        p = None
        if data[self.pos] == _T_NONE:
            self.pos += 1
        else:
            p = self.one_float()
        purchases, events = self.integer(), self.integer()
        return [horizon, t, x, p, purchases, events, self.string(), self.one_float()]
