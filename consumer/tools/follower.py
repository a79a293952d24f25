"""The reference subscriber's logic: what a downstream system should do with tierstream's
topics, written once so teams can copy it (``tierstream follow`` runs it on Kafka).

1. **Bootstrap** from the compacted current-tier topic (``user-tiers``): the last record
   per user is their tier now; a tombstone means forgotten, or expired (silent for the
   state's time-to-live). An expiry has a tombstone but no change on the change topic
   (tier-change v3 allows no tier only for an erasure): a follower counts an expired
   user in their last tier until it bootstraps again.
2. **Follow** the change topic: drop a change already seen (same ``event_id``: outboxes
   re-publish after a crash, byte-identical) or already covered by the bootstrap (same
   lifetime, ``seq`` not above the known one); report a **gap** when a user's ``seq``
   jumps (a change is missing: ask for a re-sync of that user), and apply the rest.
3. Keep, per user, only ``(lifetime_start, seq, tier)``: memory grows with users, not
   with changes. Lifetimes (``lifetime_start``, RFC 3339 UTC, so ordered as text) order a
   user's changes across an expiry or an erasure.

>>> f = Follower()
>>> change = lambda user, seq, tier, life="L1": {"event_id": f"{user}-{life}-{seq}",
...     "user_id": user, "tier": tier, "seq": seq, "lifetime_start": life}
>>> [f.apply(c) for c in (change("u1", 1, "casual"), change("u1", 1, "casual"),
...                       change("u1", 3, "vip"), change("u2", 1, "casual"))]
['applied', 'duplicate', 'gap', 'applied']
>>> f.populations(), f.gaps[0].missing
({'vip': 1, 'casual': 1}, [2])
>>> f.apply(change("u1", 1, "casual", life="L2"))   # a new lifetime starts at 1
'applied'
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

Outcome = Literal["applied", "duplicate", "gap"]


@dataclass(frozen=True)
class Gap:
    """Changes of a user's lifetime that never arrived: ``missing`` seqs."""

    user_id: str
    lifetime_start: str
    missing: list[int]
    event_id: str  #: the change after the gap


@dataclass
class _Known:
    lifetime_start: str
    seq: int
    tier: str | None


@dataclass
class Follower:
    """Everyone's current tier, from a bootstrap and the changes after it."""

    users: dict[str, _Known] = field(default_factory=dict)
    duplicates: list[str] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    applied: int = 0

    def bootstrap(self, user_id: str, record: dict[str, Any] | None) -> None:
        """A record of the current-tier topic (None: a tombstone, the user was forgotten
        or expired)."""
        if record is None:
            self.users.pop(user_id, None)
            return
        self.users[user_id] = _Known(record["lifetime_start"], int(record["seq"]), record["tier"])

    def apply(self, change: dict[str, Any]) -> Outcome:
        """One tier change; what became of it."""
        user, seq, life = change["user_id"], int(change["seq"]), change["lifetime_start"]
        known = self.users.get(user)
        if known is not None and (
            known.lifetime_start > life or (known.lifetime_start == life and seq <= known.seq)
        ):  # seen, or older than what is known: a re-published copy
            self.duplicates.append(change["event_id"])
            return "duplicate"
        # a known user's next seq, or a new lifetime's first: anything else skipped some
        expected = known.seq + 1 if known is not None and known.lifetime_start == life else 1
        outcome: Outcome = "applied"
        if seq != expected:
            self.gaps.append(Gap(user, life, list(range(expected, seq)), change["event_id"]))
            outcome = "gap"
        # an erasure (tier None) is kept as such: a late copy of the erased lifetime's
        # changes is then known for what it is
        self.users[user] = _Known(life, seq, change["tier"])
        self.applied += 1
        return outcome

    def populations(self) -> dict[str, int]:
        """Users per tier now."""
        return dict(Counter(k.tier for k in self.users.values() if k.tier is not None))

    def table(self, order: list[str] | None = None) -> str:
        """The populations as a small text table (tiers in ``order`` first)."""
        pops = self.populations()
        names = [t for t in (order or []) if t in pops] + sorted(set(pops) - set(order or []))
        width = max([len(n) for n in names] + [4])
        rows = [f"{'tier':<{width}}  users"] + [f"{n:<{width}}  {pops[n]:>5}" for n in names]
        rows.append(
            f"{'all':<{width}}  {sum(pops.values()):>5}   "
            f"({self.applied} changes, {len(self.duplicates)} duplicates, {len(self.gaps)} gaps)"
        )
        return "\n".join(rows)
