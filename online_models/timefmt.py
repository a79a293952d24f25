"""Event-time formatting shared by every message the service writes.

>>> iso_utc_ms(0)
'1970-01-01T00:00:00.000Z'
>>> iso_utc_ms(1_767_225_600_123)
'2026-01-01T00:00:00.123Z'
"""

from __future__ import annotations

from datetime import UTC, datetime


def iso_utc_ms(epoch_ms: int) -> str:
    """RFC 3339 UTC with milliseconds: one fixed format, so outputs are byte-stable."""
    seconds, millis = divmod(epoch_ms, 1000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{millis:03d}Z"
