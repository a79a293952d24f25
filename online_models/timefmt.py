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


def iso_utc_ms(epoch_ms: int) -> str:
    """RFC 3339 UTC with milliseconds: one fixed format, so outputs are byte-stable.

    The date is formatted once per day (a tier change carries three or five of these);
    the time of day is arithmetic, as UTC has no leap seconds in epoch time."""
    seconds, millis = divmod(epoch_ms, 1000)
    days, second = divmod(seconds, 86_400)
    hours, second = divmod(second, 3_600)
    minutes, second = divmod(second, 60)
    return f"{_date(days)}T{hours:02d}:{minutes:02d}:{second:02d}.{millis:03d}Z"


@lru_cache(maxsize=4096)
def _date(days: int) -> str:
    """``YYYY-MM-DD`` of the day ``days`` after 1970-01-01 (UTC)."""
    return datetime.fromtimestamp(days * 86_400, UTC).strftime("%Y-%m-%d")
