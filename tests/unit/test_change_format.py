"""A tier change's id and times are formatted without ``uuid.UUID`` and without a
``strftime`` per value; the strings must stay those of the obvious formulas, byte for
byte (subscribers dedupe by the id; outputs are compared bytewise across replays)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from online_models.tier_change import _NAMESPACE, change_event_id
from online_models.timefmt import iso_utc_ms

#: 0001-01-01T00:00:00.000Z to 9999-12-31T23:59:59.999Z: all datetime can format.
_EPOCH_MS = st.integers(-62_135_596_800_000, 253_402_300_799_999)


def _strftime_iso(epoch_ms: int) -> str:
    seconds, millis = divmod(epoch_ms, 1000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{millis:03d}Z"


@settings(max_examples=3000, deadline=None)
@given(st.one_of(_EPOCH_MS, st.integers(1_600_000_000_000, 1_900_000_000_000)))
def test_times_are_strftimes_string(epoch_ms: int) -> None:
    assert iso_utc_ms(epoch_ms) == _strftime_iso(epoch_ms)


def test_times_at_the_edges_of_days_and_of_the_calendar() -> None:
    for ms in (-62_135_596_800_000, 253_402_300_799_999, -1, 0, 86_399_999, 86_400_000):
        assert iso_utc_ms(ms) == _strftime_iso(ms)


@settings(max_examples=2000, deadline=None)
@given(st.text(max_size=40), st.integers(1, 10**9), st.integers(-(10**14), 10**14))
def test_a_change_id_is_uuid5s_string(user: str, seq: int, lifetime_ms: int) -> None:
    expected = str(uuid.uuid5(_NAMESPACE, f"{user}\x00{lifetime_ms}\x00{seq}"))
    assert change_event_id(user, seq, lifetime_ms) == expected
