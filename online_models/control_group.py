"""The control group: a fixed share of users that downstream campaigns hold out.

Whether a user is in it is a pure function of the user id and a salt, so every instance,
every restart and every replay agrees, and a user stays in (or out) for good; changing
the salt draws a new group. Tier changes carry the flag (``control``); campaigns act on
the treated users only, and the conversion of both groups per tier is the uplift the
tiering buys.

>>> group = ControlGroup(share=0.05, salt="tierstream-control-1")
>>> group.holds("u000001") == ControlGroup(0.05, "tierstream-control-1").holds("u000001")
True
>>> abs(sum(group.holds(f"u{i}") for i in range(20_000)) / 20_000 - 0.05) < 0.005
True
>>> ControlGroup(0.0, "s").holds("anyone"), ControlGroup(1.0, "s").holds("anyone")
(False, True)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

__all__ = ["ControlGroup"]

_SCALE = float(1 << 64)


@dataclass(frozen=True, slots=True)
class ControlGroup:
    """``share`` (0..1) of the users, drawn by a hash of the salt and the user id."""

    share: float = 0.0
    salt: str = "tierstream-control-1"

    def __post_init__(self) -> None:
        if not 0.0 <= self.share <= 1.0:
            raise ValueError(f"the control share must be between 0 and 1, got {self.share}")

    def holds(self, user_id: str) -> bool:
        """Whether ``user_id`` is in the control group."""
        if self.share <= 0.0:
            return False
        digest = hashlib.blake2b(
            user_id.encode(), digest_size=8, key=self.salt.encode()[:64]
        ).digest()
        return int.from_bytes(digest, "big") / _SCALE < self.share
