"""The tier-change event (schema ``schemas/tier-change.v4.json``), and the current-tier
record the compacted current-tier topic holds per user (``schemas/user-tier.v1.json``).

Its ``event_id`` is a UUIDv5 of the user id, the user's lifetime and the per-lifetime
``seq``, so the same change published twice is the same message and a subscriber can drop
the copy, while a user who comes back after their state expired (a new lifetime, ``seq``
from 1 again) never repeats an earlier id.

>>> c = TierChange(user_id="u1", previous_tier=None, tier="casual", seq=1,
...                event_time_ms=0, emitted_at_ms=1000, scores={"value_score": 0.5},
...                reason={"kind": "first_tier", "threshold": None, "direction": "none"},
...                model_version="policy-abc", lifetime_ms=0)
>>> c.event_id == change_event_id("u1", 1, 0) != change_event_id("u1", 1, 86_400_000)
True
>>> c.to_json()["event_time"], c.to_json()["lifetime_start"], c.to_json()["schema_version"]
('1970-01-01T00:00:00.000Z', '1970-01-01T00:00:00.000Z', 4)
>>> c.current()["tier"], c.current()["since"], c.current()["seq"]
('casual', '1970-01-01T00:00:00.000Z', 1)
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Any, Final

from online_models.timefmt import iso_utc_ms

SCHEMA_VERSION: Final = 4
#: Of the current-tier record (``schemas/user-tier.v1.json``).
CURRENT_SCHEMA_VERSION: Final = 1
_NAMESPACE: Final = uuid.UUID("6b1c7d0e-5f0a-4d7e-9a52-2f4d8c1e9b37")


_NAMESPACE_BYTES: Final = _NAMESPACE.bytes
#: A hex digit with its top two bits set to the RFC 4122 variant, binary 10.
_VARIANT: Final = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}


def change_event_id(user_id: str, seq: int, lifetime_ms: int) -> str:
    """Deterministic id of the ``seq``-th tier change of a user's lifetime that started
    at event time ``lifetime_ms``: ``uuid.uuid5`` of the three, formatted without making
    a ``UUID`` (the same string, in a quarter of the time;
    tests/unit/test_change_format.py compares the two).

    >>> change_event_id("u1", 1, 0)
    'd3ae0025-a779-501d-93d5-d8fe75fef06e'
    """
    name = f"{user_id}\x00{lifetime_ms}\x00{seq}".encode()
    h = hashlib.sha1(_NAMESPACE_BYTES + name).hexdigest()
    # The first 16 bytes, with the version (5) in the 13th hex digit and the RFC 4122
    # variant (binary 10) in the top bits of the 17th.
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


@dataclass(slots=True)
class TierChange:
    """One change of one user's tier, with the scores and reason behind it. Made once
    by the engine and published as it is; not frozen only because a frozen dataclass's
    constructor costs four times as much (every field set through
    ``object.__setattr__``), and a stream of new users makes one change per event."""

    user_id: str
    previous_tier: str | None
    #: None only for the ``erased`` change of a forgotten user.
    tier: str | None
    seq: int
    event_time_ms: int
    emitted_at_ms: int
    scores: dict[str, float | None]
    reason: dict[str, Any]
    model_version: str
    #: Event time of the first event of the user's current lifetime.
    lifetime_ms: int = -1
    #: The new tier's catalogue entry (``[[policy.tiers]]``): rank (lowest 0), label and
    #: attributes; None / empty for an erasure.
    tier_rank: int | None = None
    previous_tier_rank: int | None = None
    tier_label: str | None = None
    tier_attributes: dict[str, Any] = field(default_factory=dict)
    #: The user is in the control group: campaigns hold them out.
    control: bool = False
    event_id: str = field(default="")

    def __post_init__(self) -> None:
        if not self.event_id:
            self.event_id = change_event_id(self.user_id, self.seq, self.lifetime_ms)

    def to_json(self) -> dict[str, Any]:
        """The message body, in the field order of the schema."""
        return {
            "event_id": self.event_id,
            "user_id": self.user_id,
            "previous_tier": self.previous_tier,
            "tier": self.tier,
            "tier_rank": self.tier_rank,
            "previous_tier_rank": self.previous_tier_rank,
            "tier_label": self.tier_label,
            "tier_attributes": self.tier_attributes,
            "control": self.control,
            "seq": self.seq,
            "lifetime_start": iso_utc_ms(self.lifetime_ms),
            "event_time": iso_utc_ms(self.event_time_ms),
            "emitted_at": iso_utc_ms(self.emitted_at_ms),
            "scores": self.scores,
            "reason": self.reason,
            "model_version": self.model_version,
            "schema_version": SCHEMA_VERSION,
        }

    def current(self) -> dict[str, Any]:
        """The user's current-tier record after this change (the value on the compacted
        current-tier topic): what a subscriber needs to act without the change history."""
        return {
            "user_id": self.user_id,
            "tier": self.tier,
            "tier_rank": self.tier_rank,
            "tier_label": self.tier_label,
            "tier_attributes": self.tier_attributes,
            "control": self.control,
            "since": iso_utc_ms(self.event_time_ms),
            "seq": self.seq,
            "lifetime_start": iso_utc_ms(self.lifetime_ms),
            "last_event_id": self.event_id,
            "scores": self.scores,
            "model_version": self.model_version,
            "schema_version": CURRENT_SCHEMA_VERSION,
        }
