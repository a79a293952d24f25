"""Event-time formatting shared by every message the service writes.

>>> iso_utc_ms(0)
'1970-01-01T00:00:00.000Z'
>>> iso_utc_ms(1_767_225_600_123)
'2026-01-01T00:00:00.123Z'
>>> iso_utc_ms(-1)
'1969-12-31T23:59:59.999Z'
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache


@lru_cache(maxsize=1 << 12)
def iso_utc_ms(epoch_ms: int) -> str:
    """RFC 3339 UTC with milliseconds: one fixed format, so outputs are byte-stable.

    Cached: a tier change and its current-tier record carry five of these, of two or
    three instants (a batch's changes share their ``emitted_at``; a new user's lifetime
    starts at the event). The date is formatted once per day; the time of day is
    arithmetic, as UTC has no leap seconds in epoch time."""
    seconds, millis = divmod(epoch_ms, 1000)
    days, second = divmod(seconds, 86_400)
    hours, second = divmod(second, 3_600)
    minutes, second = divmod(second, 60)
    return f"{_date(days)}T{hours:02d}:{minutes:02d}:{second:02d}.{millis:03d}Z"


@lru_cache(maxsize=4096)
def _date(days: int) -> str:
    """``YYYY-MM-DD`` of the day ``days`` after 1970-01-01 (UTC)."""
    return datetime.fromtimestamp(days * 86_400, UTC).strftime("%Y-%m-%d")
