"""The binary user state (:mod:`online_models.state_codec`): exact to the bit, small,
readable across layouts and from JSON, and refused with a ValueError when damaged."""

from __future__ import annotations

import math
import struct
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.demo.synthetic import GeneratorConfig, generate
from consumer.service.records import InputRecord
from consumer.service.tier_config import DEFAULT_TIERS_FILE, load_engine
from consumer.tools.replay import replay
from online_models import state_codec
from online_models.event import Event
from online_models.feature_vector import FEATURE_NAMES, vector
from online_models.state_codec import (
    LAYOUTS,
    MAGIC,
    PACKED_LEAN,
    current_layout,
    decode_state,
    encode_state,
    state_json,
)
from online_models.state_compression import compress, decompress
from online_models.user_state import DEDUP_WINDOW, Recomputable, UserState, event_key
from tests.bench.codec_cpu import deflate, saved_states

T0 = 1_767_225_600_000  # 2026-01-01
#: The length of a snapshot's vector: a state keeps only those of today's length.
DIM = len(FEATURE_NAMES)


def _bits(value: Any) -> Any:
    """``value`` with every float as its IEEE-754 bits (-0.0 and 0.0 differ)."""
    if isinstance(value, float):
        return ("f", struct.pack("<d", value))
    if isinstance(value, dict):
        return {k: _bits(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_bits(v) for v in value]
    return value


def _same(a: UserState, b: UserState) -> bool:
    return _bits(a.to_json()) == _bits(b.to_json()) and a.recent_ids == b.recent_ids


def _walk_decoded(raw: bytes) -> UserState:
    """``raw`` read by the generic walk alone (what decode_state does without its
    unrolled path)."""
    return UserState.from_json(state_codec._read_tree(raw))


def _outcome(decode: Callable[[bytes], UserState], raw: bytes) -> Any:
    """What ``decode`` makes of ``raw``: the state's bits, or the error it raises."""
    try:
        state = decode(raw)
    except ValueError as exc:
        return ("refused", str(exc))
    return (_bits(state.to_json()), state.recent_ids)


@pytest.fixture(scope="module")
def generated_states() -> list[bytes]:
    """The stored states of a generated stream (the demo's generator, its own seed)."""

    def recs() -> Iterator[InputRecord]:
        for i, r in enumerate(generate(GeneratorConfig(users=300, events=9000, seed=41))):
            yield InputRecord("in", 0, i, None, r.key, r.value)

    _, store = replay(recs(), load_engine(DEFAULT_TIERS_FILE))
    return list(store.users.values())


def test_every_generated_state_reads_back_bit_for_bit(generated_states: list[bytes]) -> None:
    assert all(raw[:1] == MAGIC for raw in generated_states)
    for raw in generated_states:
        state = decode_state(raw)
        assert encode_state(state) == raw  # one state, one encoding
        again = decode_state(encode_state(state))
        assert _same(state, again)


def test_every_state_a_replay_saves_is_written_and_read_as_the_walk_does() -> None:
    """Every state a replay saves (not only the last of each user: snapshots pending,
    resolved, users gone silent) is packed, and reads back as its tagged form reads
    through the generic walk; the tagged form's unrolled reader (states written by
    earlier versions) reads it as the walk does, none of them left to the walk."""
    config = GeneratorConfig(users=400, events=6000, seed=43, days=120)
    records = (InputRecord("in", 0, i, None, None, r.value) for i, r in enumerate(generate(config)))
    saved = saved_states(records, batch_size=200)
    assert len(saved) > 2000
    with_snapshots = lean = 0
    for raw in saved:
        assert raw[:2] in (MAGIC + bytes((state_codec.PACKED,)), MAGIC + bytes((PACKED_LEAN,)))
        state = state_codec._decode_packed(raw)
        tagged = state_codec._encode_tree(state)
        assert _same(state, _walk_decoded(tagged))
        assert _same(state_codec._decode_fast(tagged), state)  # raises if it hands it on
        assert encode_state(state) == raw
        with_snapshots += bool(state.pending)
        lean += raw[1] == PACKED_LEAN
    assert with_snapshots > 500
    assert lean > 500  # the states of users whose last touch was a timer


def test_the_unrolled_paths_are_of_the_current_layout() -> None:
    """A new layout is written in the tagged form and read by the generic walk alone,
    correct but about twice slower: this fails until _encode_packed, _decode_packed and
    _decode_fast are brought to it."""
    assert max(LAYOUTS) == state_codec._FAST_LAYOUT, (
        "bring the packed form and _decode_fast of online_models/state_codec.py to the new layout"
    )


def _unusual_states() -> Iterator[tuple[str, UserState]]:
    """States of shapes the code does not make but a state may hold: each must be
    written and read exactly as the walk does."""

    def state(change: Callable[[UserState, list[Any]], object]) -> UserState:
        s = UserState.new()
        s.features.apply(Event("e1", "u", "purchase", T0, 19.99, category="x"))
        s.remember("e1")
        s.tier, s.seq, s.due_ms = "vip", 3, T0 + 7
        snap = [7, T0, [0.5, 0.0, 2.0] * (DIM // 3) + [1.0] * (DIM % 3), 0.3, 0, 1, "vip", 0.0]
        s.pending = [snap]
        change(s, snap)
        return s

    yield "an int among floats", state(lambda s, p: s.features.counts[0].__setitem__(0, 1))
    yield "an int total", state(lambda s, p: setattr(s.features, "total_spend", 2))
    yield "no snapshot list", state(lambda s, p: setattr(s, "pending", []))
    yield "a snapshot of 9", state(lambda s, p: p.append(1))
    yield "a snapshot of floats", state(lambda s, p: setattr(s, "pending", [[1.0] * 8]))
    yield "an int propensity", state(lambda s, p: p.__setitem__(3, 1))
    yield "a long vector", state(lambda s, p: p.__setitem__(2, [0.5] * 200))
    yield "an empty vector", state(lambda s, p: p.__setitem__(2, []))
    yield "an empty count row", state(lambda s, p: s.features.counts.__setitem__(1, []))
    yield "a NaN and -0.0", state(lambda s, p: p[2].__setitem__(slice(2), [math.nan, -0.0]))
    yield "a tier not a string", state(lambda s, p: setattr(s, "tier", 5))
    yield "a None timestamp", state(lambda s, p: setattr(s.features, "last_ms", None))
    yield "a bool count", state(lambda s, p: setattr(s.features, "events", True))
    yield "a short digest", state(lambda s, p: s.recent_ids.append(b"abc"))
    yield "no dedup window", state(lambda s, p: s.recent_ids.clear())
    yield "three half-lives", state(lambda s, p: setattr(s.features, "spend", [1.0, 2.0, 3.0]))
    yield "an infinite sum", state(lambda s, p: s.features.spend.__setitem__(2, math.inf))
    yield "big integers", state(lambda s, p: setattr(s, "born_ms", 2**62))
    yield "a long tier name", state(lambda s, p: setattr(s, "tier", "t" * 300))
    yield "vectors of two lengths", state(lambda s, p: s.pending.append([*p[:2], [1.0], *p[3:]]))
    yield "300 snapshots", state(lambda s, p: s.pending.extend([p] * 299))
    yield "an empty snapshot list", state(lambda s, p: setattr(s, "pending", []))

    def left_out(s: UserState, p: list[Any], other: list[float] | None) -> None:
        s.pending.append([*p[:2], other, *p[3:]])
        p[2] = None  # as read back: the features' own vector at its time

    yield "a vector left out", state(lambda s, p: p.__setitem__(2, None))
    yield "a vector left out, one kept", state(lambda s, p: left_out(s, p, [2.0] * DIM))
    yield "a vector left out, one short", state(lambda s, p: left_out(s, p, [1.0]))
    yield (
        "a vector of the features",
        state(lambda s, p: p.__setitem__(2, Recomputable(vector(s.features, T0)))),
    )


@pytest.mark.parametrize(("why", "state"), list(_unusual_states()))
def test_a_state_of_an_unusual_shape_is_written_and_read_as_the_walk_does(
    why: str, state: UserState
) -> None:
    """Packed when the packed form holds it, tagged when not: either way it reads back
    (or is refused) as its tagged form does through the generic walk."""
    tagged = state_codec._encode_tree(state)
    expected = _outcome(_walk_decoded, tagged)
    assert _outcome(decode_state, encode_state(state)) == expected, why
    assert _outcome(decode_state, tagged) == expected, why


def test_an_integer_past_64_bits_is_refused_by_either_path() -> None:
    s = UserState.new()
    s.born_ms = 2**64
    with pytest.raises(ValueError, match="integer out of 64 bits"):
        encode_state(s)


def test_a_state_is_a_fraction_of_its_json(generated_states: list[bytes]) -> None:
    """A size guard, not a benchmark (docs/performance.md has the measured figures): the
    dedup window as digests, floats as bytes, zeros as bits."""
    binary = sum(map(len, generated_states))
    json = sum(len(orjson.dumps(decode_state(raw).to_json())) for raw in generated_states)
    # 3.05 with snapshots at events and timers, 2.93 on the learning grid (its snapshots
    # are of other moments than the events', so they share fewer floats)
    assert binary * 2.8 < json


finite = st.floats(allow_nan=False, allow_infinity=False)
odd_floats = st.sampled_from([0.0, -0.0, 5e-324, -5e-324, 1.0, 63.0, 64.0, 127.0, 1e308, -1.5])
#: A feature's floats are counts and sums of amounts: never below zero (-0.0 is not).
feature = st.floats(min_value=0.0, allow_infinity=False) | st.sampled_from(
    [0.0, -0.0, 5e-324, 1.0, 63.0, 64.0, 127.0, 1e308]
)


@settings(max_examples=150, deadline=None)
@given(
    counts=st.lists(st.lists(feature, min_size=11, max_size=11), min_size=4, max_size=4),
    sums=st.lists(feature, min_size=3, max_size=3),
    ints=st.lists(st.integers(-(2**63), 2**63 - 1), min_size=6, max_size=6),
    tier=st.none() | st.text(max_size=12),
    ids=st.lists(st.text(max_size=40), max_size=80),
    x=st.lists(finite | odd_floats, min_size=DIM, max_size=DIM),
)
def test_any_state_reads_back_bit_for_bit(
    counts: list[list[float]],
    sums: list[float],
    ints: list[int],
    tier: str | None,
    ids: list[str],
    x: list[float],
) -> None:
    s = UserState.new()
    f = s.features
    f.counts = counts
    f.spend, f.total_spend, f.total_refunded = [sums[0]] * 4, sums[1], sums[2]
    f.last_ms, f.first_ms, f.events = ints[0], ints[1], abs(ints[2]) // 2
    s.tier, s.seq, s.due_ms, s.born_ms = tier, ints[3], ints[4], ints[5]
    for i in ids:
        s.remember(i)
    s.pending = [
        [30, ints[0], x, None, 0, 2, tier, sums[0]],
        [60, ints[1], x, 0.25, 1, 0, None, 0.0],
    ]
    raw = encode_state(s)
    floats = [*sums, *x, *(v for row in counts for v in row)]
    negative_zero = any(v == 0.0 and math.copysign(1.0, v) < 0 for v in floats)
    form = state_codec.FORMAT if negative_zero else state_codec.PACKED  # -0.0: tagged
    assert raw[:2] == MAGIC + bytes((form,))
    assert _same(decode_state(raw), s)
    tagged = state_codec._encode_tree(s)
    assert _same(decode_state(tagged), s)
    assert _same(_walk_decoded(tagged), s)


def test_a_state_with_more_distinct_floats_than_one_byte_codes_reads_back() -> None:
    s = UserState.new()
    s.pending = [
        [i, T0 + i, [i + k / 7 for k in range(DIM)], 0.5, 0, 0, "a", 1.5] for i in range(20)
    ]
    assert _same(decode_state(encode_state(s)), s)


def test_a_state_saved_as_json_is_still_read_with_its_dedup_window() -> None:
    """A rolling upgrade meets states of the earlier version: JSON, event ids as text."""
    s = UserState.new()
    s.features.apply(Event("e1", "u", "purchase", T0, 12.5))
    old = {**s.to_json(), "recent_ids": ["e1", "e2"]}
    del old["recent_digests"]
    state = decode_state(orjson.dumps(old))
    assert state.seen("e1") and state.seen("e2") and not state.seen("e3")
    assert state.features.total_spend == 12.5
    assert decode_state(encode_state(state)).seen("e2")


def test_the_layout_of_the_code_is_registered() -> None:
    """A new field of UserState or UserFeatures is a new layout: this fails until it is
    added to LAYOUTS with the next number (the message has the line to add), so that
    the states written before it stay readable."""
    assert current_layout() == LAYOUTS[max(LAYOUTS)], (
        f"add LAYOUTS[{max(LAYOUTS) + 1}] = {current_layout()!r} to online_models/state_codec.py"
    )


def test_a_state_of_an_older_layout_is_read_and_completed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A state written before the categories and first purchase existed (layout 1 with
    those fields taken out, as layout 0) reads with them completed as from old JSON."""
    features, *rest = LAYOUTS[1]
    assert isinstance(features, tuple)
    older = tuple(k for k in features[1] if k not in ("categories", "first_purchase_ms"))
    monkeypatch.setitem(LAYOUTS, 0, ((features[0], older), *rest))
    monkeypatch.setattr(state_codec, "_CURRENT", 0)
    s = UserState.new()
    s.features.apply(Event("e1", "u", "purchase", T0, 3.0, category="books"))
    raw = encode_state(s)
    monkeypatch.setattr(state_codec, "_CURRENT", 1)
    state = decode_state(raw)
    assert state.features.first_purchase_ms == T0  # taken as its first event
    assert state.features.categories == [0.0] * len(s.features.categories)
    assert state.features.total_spend == 3.0


def _damages(raw: bytes) -> Iterator[bytes]:
    yield from (raw[:n] for n in range(len(raw)))  # every truncation
    yield raw + b"\x00"
    for i in range(len(raw)):
        for b in (0x00, 0x7F, 0x80, 0xFF):
            yield raw[:i] + bytes([b]) + raw[i + 1 :]


@pytest.mark.parametrize("form", ["packed", "lean", "tagged"])
def test_damaged_bytes_raise_value_error_or_read_as_a_valid_state(form: str) -> None:
    """Hostile or damaged bytes: a ValueError (the batch sets the user aside), never
    another exception; a change that still reads is a state that encodes again."""
    s = UserState.new()
    s.features.apply(Event("e1", "u", "purchase", T0, 19.99, category="x"))
    s.remember("e1")
    s.tier, s.pending = "vip", [[7, T0, [0.5, 0.0, 2.0], 0.3, 0, 1, "vip", 0.0]]
    if form == "lean":  # one vector kept, one left out
        s.pending = [
            [7, T0, [0.5] * DIM, 0.3, 0, 1, "vip", 0.0],
            [9, T0 + 5, Recomputable(vector(s.features, T0 + 5)), None, 0, 0, None, 1.5],
        ]
    raw = encode_state(s) if form != "tagged" else state_codec._encode_tree(s)
    expected = {"packed": state_codec.PACKED, "lean": PACKED_LEAN, "tagged": state_codec.FORMAT}
    assert raw[1] == expected[form]
    if form == "lean":  # (the others' three-float vector is of another length: dropped)
        assert _same(decode_state(raw), s)
    refused = 0
    for bad in _damages(raw):
        try:
            state = decode_state(bad)
        except ValueError:
            refused += 1
            continue
        assert decode_state(encode_state(state)).to_json() == state.to_json()
    assert refused > 100


def test_damaged_bytes_are_read_or_refused_as_the_walk_reads_or_refuses_them() -> None:
    """The tagged form's unrolled reader accepts nothing the walk refuses and refuses
    nothing it reads (it hands anything unexpected to the walk, which says why)."""
    s = UserState.new()
    s.features.apply(Event("e1", "u", "purchase", T0, 19.99, category="x"))
    s.remember("e1")
    s.tier = "vip"
    s.pending = [
        [7, T0, [0.5] * DIM, 0.3, 0, 1, "vip", 0.0],
        [9, T0, [0.5] * DIM, None, 0, 0, "vip", 1.5],
    ]

    def walk(raw: bytes) -> UserState:
        return decode_state(raw) if raw[:1] == b"{" else _walk_decoded(raw)

    for bad in _damages(state_codec._encode_tree(s)):
        if bad[:2] in state_codec._PACKED_FORMS:
            continue  # the tagged form's format byte damaged into a packed one's
        try:
            expected = _outcome(walk, bad)
        except (IndexError, KeyError, TypeError, AttributeError) as exc:
            expected = ("refused", f"unusable user state: {exc!r}")
        assert _outcome(decode_state, bad) == expected, bad


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"", "not a state"),
        (b"\xa7", "truncated"),
        (b"\xa7\x09\x01", "unknown format"),
        (b"\xa7\x01\x63", "unknown layout 99"),
        (b"\xa7\x01\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", "varint"),
        (b"\xa7\x02", "truncated"),
        (b"\xa7\x02\x07\x00", "unknown layout 7"),
        (b"\xa7\x02\x01\x09" + b"d" * 40, "truncated"),
        (b"\xa7\x02\x01\x00\xff\xff", "while decompressing"),
        (b"\xa7\x02\x01\x00" + zlib.compress(b"\x00" * 7, 1, -15), "truncated"),
        (b"\xa7\x02\x01\x00" + zlib.compress(b"\x01", 1, -15) + b"x", "after its end"),
        (b"\xa7\x02\x01\x00" + zlib.compress(bytes(2**21), 1, -15), "longer than any"),
        (b"\xa7\x03\x01\x00" + zlib.compress(bytes((0, 1, 0, 0, 0, 0, 29, 1)), 1, -11), "1 of 1"),
        (b"\xa7\x04\x01\x00\xff\xff", "corrupt user state"),
        (b"\xa7\x04\x01\x00" + compress(bytes(7))[:-2], "corrupt user state"),
        (b"\xa7\x04\x01\x00" + compress(bytes(7)), "truncated"),
        (b"\xa7\x04\x01\x00" + compress(b"\x01") + b"x", "unused data"),
        (b"\xa7\x04\x01\x00" + compress(bytes(2**20 + 1)), "longer than any"),
        (b"\xa7\x05\x01\x00" + compress(bytes((0, 1, 0, 0, 0, 0, 29, 1))), "1 of 1"),
        (b"{not json", "unexpected character"),
        (b"[1, 2]", "not a state"),
    ],
)
def test_bytes_that_are_no_state_say_why(raw: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        decode_state(raw)


def test_a_binary_state_with_an_infinite_sum_is_refused_as_json_ones_are() -> None:
    s = UserState.new()
    s.features.spend[0] = math.inf
    with pytest.raises(ValueError, match=r"features.spend\[0\] is inf, not a finite number"):
        decode_state(encode_state(s))


def test_the_dedup_window_keeps_digests_and_its_length() -> None:
    s = UserState.new()
    for i in range(DEDUP_WINDOW + 5):
        s.remember(f"e{i}")
    back = decode_state(encode_state(s))
    assert back.recent_ids == deque(event_key(f"e{i}") for i in range(5, DEDUP_WINDOW + 5))
    assert back.seen("e5") and not back.seen("e4")
    assert state_json(encode_state(s))["recent_digests"][0] == event_key("e5").hex()


def test_a_packed_state_reads_back_with_one_zero_for_all() -> None:
    """Most of a state's floats are zeros and a batch holds thousands of states: read
    back, they are one float object (as the tagged form's pool made them), not one each
    (38 MB more at the peak of a sparse replay)."""
    s = UserState.new()
    s.features.apply(Event("e1", "u", "purchase", T0, 19.99, category="x"))
    s.pending = [[7, T0, [0.0, 1.5] * (DIM // 2) + [0.0] * (DIM % 2), 0.3, 0, 1, None, 0.0]]
    back = decode_state(encode_state(s))
    zeros = [v for row in back.features.counts for v in row if v == 0.0]
    zeros += [v for v in back.pending[0][2] if v == 0.0] if back.pending else []
    assert len(zeros) > 40
    assert len({id(v) for v in zeros}) == 1


def test_a_snapshot_taken_since_the_last_event_is_stored_without_its_vector() -> None:
    """A pending snapshot's vector that is the features' own at its time (no event since)
    is left out of the stored state (format 3) and made again, bit for bit, when read;
    once an event makes it the snapshot's own, it is stored (format 2, which earlier
    versions read)."""
    s = UserState.new()
    s.features.apply(Event("e1", "u", "purchase", T0, 19.99, category="x"))
    s.remember("e1")
    week, month = T0 + 7 * 86_400_000, T0 + 30 * 86_400_000
    x = Recomputable(vector(s.features, week))
    s.pending = [
        [30 * 86_400_000, week, x, 0.25, 0, 0, "vip", 0.0],
        [365 * 86_400_000, week, x, None, 0, 0, None, 0.0],  # not scored yet
    ]
    lean = encode_state(s)
    assert lean[1] == PACKED_LEAN
    back = decode_state(lean)
    assert back.pending is not None and [p[2] for p in back.pending] == [None, None]
    assert _same(back, s)  # its JSON makes the vectors again
    assert _bits(back.snapshot_vector(back.pending[1])) == _bits(list(x))
    assert encode_state(back) == lean
    back.fix_snapshots()  # an event comes
    kept = encode_state(back)
    assert kept[1] == state_codec.PACKED and len(kept) > len(lean) + 100
    assert _same(decode_state(kept), s)
    back.features.apply(Event("e2", "u", "page_view", month))
    assert _bits(back.pending[0][2]) == _bits(list(x))  # the moment's vector, not today's
    assert vector(back.features, week) != list(x)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda f: f.counts[2].__setitem__(4, -1.0), "counts holds -1.0, below 0"),
        (lambda f: setattr(f, "total_spend", -0.5), "total_spend is -0.5, below 0"),
        (lambda f: setattr(f, "purchases", -1), "purchases is -1, below 0"),
        (lambda f: setattr(f, "first_purchase_ms", T0 + 1), "is after last_purchase_ms"),
    ],
)
def test_features_no_stream_could_make_are_refused(
    change: Callable[[Any], object], why: str
) -> None:
    """Damaged or forged bytes that read as features no events could make (they would
    break the feature vector's logarithms at the user's next touch, or when a vector
    left out of the state is made again): refused as the state is read, in every form,
    so the batch sets the user aside instead of failing on them."""
    s = UserState.new()
    s.features.apply(Event("e1", "u", "purchase", T0, 19.99, category="x"))
    s.pending = [[7, T0 + 5, Recomputable(vector(s.features, T0 + 5)), 0.3, 0, 0, None, 0.0]]
    change(s.features)
    for raw in (encode_state(s), state_codec._encode_tree(s), orjson.dumps(s.to_json())):
        with pytest.raises(ValueError, match=why):
            decode_state(raw)


def test_a_negative_zero_forged_into_a_packed_state_reads_as_the_zero_it_stands_for() -> None:
    """The reader tells a float below zero by its sign bit, so a -0.0 (which the encoder
    never writes: it leaves such a state to the tagged form) takes the long way, through
    the checks of the JSON form; it must read as the state with 0.0 there, not as a
    damaged one."""
    s = UserState.new()
    s.features.apply(Event("e1", "u", "purchase", T0, 19.99, category="x"))
    raw = encode_state(s)
    assert raw[1] == state_codec.PACKED
    _, body = state_codec._packed_parts(raw)
    start = state_codec._HEADER.size + 8 * state_codec._STATE_INTS  # the first float
    zeros = [i for i in range(start, start + 8 * 40, 8) if body[i : i + 8] == bytes(8)]
    assert zeros  # a decayed count no event touched
    forged = bytearray(body)
    forged[zeros[0] + 7] = 0x80  # 0.0 -> -0.0
    assert struct.unpack_from("<d", forged, zeros[0])[0] == 0.0
    read = decode_state(_with_body(raw, body, bytes(forged)))
    assert _same(read, s) and read.to_json() == decode_state(raw).to_json()


def _with_body(raw: bytes, body: bytes, forged: bytes) -> bytes:
    """``raw`` (a packed state whose body is ``body``) with ``forged`` compressed in its
    body's place."""
    return raw[: len(raw) - len(compress(body))] + compress(forged)


def _deflated(raw: bytes) -> bytes:
    """``raw`` (format 4 or 5) as an earlier version wrote the same state: format 2 or 3,
    the same body raw-deflated (level 1, a 2 KiB window)."""
    keys, body = state_codec._packed_parts(raw)
    head = raw[: 4 + len(b"".join(keys))]
    old = {state_codec.PACKED: state_codec.DEFLATED_PACKED, PACKED_LEAN: state_codec.DEFLATED_LEAN}
    return head[:1] + bytes((old[raw[1]],)) + head[2:] + deflate(body)


def test_dictionary_compressed_states_are_smaller_and_deflated_ones_still_read() -> None:
    """Formats 4 and 5 (the body compressed by Zstandard with the packaged dictionary)
    store every state a replay saves in fewer bytes than the raw deflate of formats 2
    and 3, 10% fewer over all; a state an earlier version deflated reads back as the
    same state, and is written again in the new form."""
    config = GeneratorConfig(users=300, events=6000, seed=44, days=120)
    records = (InputRecord("in", 0, i, None, None, r.value) for i, r in enumerate(generate(config)))
    saved = saved_states(records, batch_size=200)
    assert {raw[1] for raw in saved} == {state_codec.PACKED, PACKED_LEAN}
    old = [_deflated(raw) for raw in saved]
    assert {raw[1] for raw in old} == {state_codec.DEFLATED_PACKED, state_codec.DEFLATED_LEAN}
    assert sum(map(len, saved)) < 0.9 * sum(map(len, old))
    for raw, earlier in zip(saved[::7], old[::7], strict=True):
        state = decode_state(earlier)
        assert _same(state, decode_state(raw))
        assert encode_state(state) == raw


#: A state's body as compressed by the released dictionary (:func:`_released_state`).
RELEASED_FRAME = bytes.fromhex(
    "60ce015d0500c3c71d706911eed2d63ce82a71439efcbea7f8b870fde7f76d130eb2c22ebfc371208fa6"
    "8afdcea14dc5526df71bc93fb44753b4bed1758690cfa19e6f94bcc0114dc1d33782306a3928d6b193a1"
    "74406b5cd37cb0b019f13be5f4c621b565b5c76a46a7aeebba5bc2eea5aeeb1a8d7928887ffa09870887"
    "ce1117fc228aebe5a21f1f5d2a7006f8a1167e71fcdb423b19502796898c841a1c4490ca0b9ed92fff69"
    "15d5e3560f4e24cefe"
)


def _released_state() -> UserState:
    s = UserState.new()
    s.features.apply(Event("e1", "u", "purchase", T0, 19.99, category="books"))
    s.features.apply(Event("e2", "u", "page_view", T0 + 3_600_000))
    s.remember("e1")
    s.remember("e2")
    s.tier = "casual"
    return s


def test_a_body_compressed_by_the_released_dictionary_still_reads() -> None:
    """A body compressed with the packaged dictionary reads back only with the same
    dictionary bytes (checked at import, by their SHA-256): a frame written when it was
    released decompresses to the body of the same state today."""
    body = state_codec.packed_body(encode_state(_released_state()))
    assert body is not None and len(body) > 4 * len(RELEASED_FRAME)
    assert decompress(RELEASED_FRAME, limit=1 << 20) == body


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("where", [2, 3, 7])
def test_a_snapshot_holding_a_number_that_is_not_finite_is_refused(where: int, bad: float) -> None:
    """A pending snapshot's vector, propensity and spend since are what a head learns
    from when its label resolves: a NaN or an infinity there (damaged or forged bytes)
    would reach the model and every version after it. Refused, packed or JSON, as a
    feature is."""
    s = UserState.new()
    s.features.apply(Event("e1", "u", "purchase", T0, 19.99, category="x"))
    s.pending = [[7, T0, [0.5] * DIM, 0.3, 0, 1, "vip", 2.5]]
    raw = encode_state(s)
    _, body = state_codec._packed_parts(raw)
    mark = {2: 0.5, 3: 0.3, 7: 2.5}[where]
    at = body.rindex(struct.pack("<d", mark))  # the snapshot's floats follow the features'
    forged = body[:at] + struct.pack("<d", bad) + body[at + 8 :]
    with pytest.raises(ValueError, match="not finite"):
        decode_state(_with_body(raw, body, forged))
    data = s.to_json()
    value = data["pending"][0][where]
    data["pending"][0][where] = [bad, *value[1:]] if where == 2 else bad
    with pytest.raises(ValueError, match=rf"pending\[0\]\[{where}\].* is {bad!r}, not a finite"):
        UserState.from_json(data)
