"""Ordered tiers with thresholds on the value score, hysteresis and a minimum dwell time.

A user moves up into tier ``j`` only when the score clears ``threshold_j + margin``, and
falls out of their tier ``i`` only when it drops below ``threshold_i - margin``; a score
wandering around a threshold therefore does not make the tier flap. ``min_dwell_ms``
(event time) additionally holds a user in a new tier for a while.

>>> policy = TierPolicy.from_config({
...     "hysteresis": 0.5,
...     "tiers": [{"name": "casual"}, {"name": "engaged", "min_score": 2.0},
...               {"name": "vip", "min_score": 6.0}]})
>>> policy.decide(None, 2.1, since_ms=0, now_ms=0).tier     # first tier: no margin
'engaged'
>>> policy.decide("casual", 2.1, since_ms=0, now_ms=0)      # not clear of 2.0 + 0.5: stays
>>> policy.decide("casual", 2.6, since_ms=0, now_ms=0).tier
'engaged'
>>> policy.decide("engaged", 1.6, since_ms=0, now_ms=0)     # not below 2.0 - 0.5: stays
>>> d = policy.decide("vip", 1.0, since_ms=0, now_ms=0)
>>> d.tier, d.threshold, d.direction
('casual', 6.0, 'down')

Each tier is also an entry of the catalogue subscribers read with every change: its rank
(0 is the lowest), a display label and free-form attributes (actions, entitlements, a
budget weight: whatever the operator writes under ``attributes``).

>>> vip = TierPolicy.from_config({"tiers": [
...     {"name": "casual"},
...     {"name": "vip", "min_score": 6.0, "label": "VIP",
...      "attributes": {"actions": ["concierge"], "budget_weight": 4.0}}]}).tier("vip")
>>> vip.rank, vip.label, vip.attributes["actions"]
(1, 'VIP', ['concierge'])
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from online_models.features import DAY_MS

__all__ = ["Tier", "TierDecision", "TierPolicy"]


@dataclass(frozen=True, slots=True)
class Tier:
    """A named tier entered at ``min_score`` (the lowest tier has ``-inf``), with its
    catalogue entry: ``rank`` (its position, lowest 0), ``label`` and ``attributes``."""

    name: str
    min_score: float
    label: str = ""
    attributes: Mapping[str, Any] = field(default_factory=dict)
    rank: int = 0


#: The keys a ``[[policy.tiers]]`` table may have: anything else is a typo.
TIER_KEYS = frozenset({"name", "min_score", "label", "attributes"})


@dataclass(frozen=True, slots=True)
class TierDecision:
    """A change of tier: the new tier, the boundary crossed and the direction."""

    tier: str
    threshold: float | None
    direction: Literal["up", "down", "none"]


class TierPolicy:
    """Decides a user's tier from the value score; see the module docstring."""

    def __init__(self, tiers: list[Tier], *, hysteresis: float = 0.0, min_dwell_ms: int = 0):
        if not tiers:
            raise ValueError("the tier policy needs at least one tier")
        names = [t.name for t in tiers]
        if len(set(names)) != len(names):
            raise ValueError(f"tier names must be unique, got {names}")
        scores = [t.min_score for t in tiers[1:]]
        if any(not math.isfinite(s) for s in scores) or scores != sorted(set(scores)):
            raise ValueError("tier min_score values must be finite and strictly increasing")
        if hysteresis < 0 or min_dwell_ms < 0:
            raise ValueError("hysteresis and min_dwell must be >= 0")
        self.tiers = [
            replace(t, rank=i, label=t.label or t.name)
            for i, t in enumerate([replace(tiers[0], min_score=-math.inf), *tiers[1:]])
        ]
        self.hysteresis = hysteresis
        self.min_dwell_ms = min_dwell_ms
        self._index = {t.name: i for i, t in enumerate(self.tiers)}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TierPolicy:
        """Build from the ``[policy]`` table of a tier config file (lowest tier first).

        Raises ValueError with a message naming the bad key.
        """
        raw = config.get("tiers")
        if not isinstance(raw, list) or not raw:
            raise ValueError("'tiers' must be a non-empty list of {name, min_score} tables")
        tiers = [_tier(i, item) for i, item in enumerate(raw)]
        dwell_days = float(config.get("min_dwell_days", 0.0))
        return cls(
            tiers,
            hysteresis=float(config.get("hysteresis", 0.0)),
            min_dwell_ms=round(dwell_days * DAY_MS),
        )

    def tier(self, name: str) -> Tier:
        """The tier ``name`` (its catalogue entry). Raises KeyError on an unknown tier."""
        return self.tiers[self._index[name]]

    @property
    def names(self) -> list[str]:
        """Tier names, lowest first."""
        return [t.name for t in self.tiers]

    def rank(self, tier: str) -> int:
        """Position of ``tier``, lowest is 0. Raises KeyError on an unknown tier."""
        return self._index[tier]

    def raw_tier(self, score: float) -> int:
        """The tier index ``score`` falls in, ignoring hysteresis."""
        i = 0
        for j in range(1, len(self.tiers)):
            if score >= self.tiers[j].min_score:
                i = j
        return i

    def holds(self, current: str | None, *, since_ms: int, now_ms: int) -> bool:
        """Whether :meth:`decide` gives no change whatever the score: a user in a tier of
        this config since ``since_ms``, for less than the dwell time at ``now_ms``.

        >>> p = TierPolicy.from_config({"tiers": [{"name": "low"}, {"name": "high",
        ...     "min_score": 1}], "min_dwell_days": 1})
        >>> p.holds("low", since_ms=0, now_ms=1000), p.decide("low", 99.0, since_ms=0, now_ms=1000)
        (True, None)
        >>> p.holds("low", since_ms=0, now_ms=86_400_000), p.holds(None, since_ms=0, now_ms=0)
        (False, False)
        """
        return (
            current is not None and now_ms - since_ms < self.min_dwell_ms and current in self._index
        )

    def decide(
        self, current: str | None, score: float, *, since_ms: int, now_ms: int
    ) -> TierDecision | None:
        """The change for a user in ``current`` (None: no tier yet) at ``score``, or None."""
        if current is None or current not in self._index:
            # A first tier, or a tier a new config no longer has: place without margin.
            return TierDecision(self.tiers[self.raw_tier(score)].name, None, "none")
        if self.holds(current, since_ms=since_ms, now_ms=now_ms):
            return None
        i = self._index[current]
        m = self.hysteresis
        for j in range(len(self.tiers) - 1, i, -1):
            if score >= self.tiers[j].min_score + m:
                return TierDecision(self.tiers[j].name, self.tiers[j].min_score, "up")
        if i > 0 and score < self.tiers[i].min_score - m:
            j = i - 1
            while j > 0 and score < self.tiers[j].min_score - m:
                j -= 1
            return TierDecision(self.tiers[j].name, self.tiers[i].min_score, "down")
        return None


def _tier(i: int, item: Any) -> Tier:
    """One ``[[policy.tiers]]`` table; ValueError naming what is wrong."""
    if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
        raise ValueError(f"tiers[{i}] needs a string 'name'")
    name = item["name"]
    unknown = sorted(set(item) - TIER_KEYS)
    if unknown:
        raise ValueError(
            f"tiers[{i}] ({name}): unknown key {unknown[0]!r} (a tier has "
            f"{', '.join(sorted(TIER_KEYS))}; free-form data goes under 'attributes')"
        )
    if i > 0 and not isinstance(item.get("min_score"), int | float):
        raise ValueError(f"tiers[{i}] ({name}) needs a numeric 'min_score'")
    label = item.get("label", "")
    if not isinstance(label, str):
        raise ValueError(f"tiers[{i}] ({name}): 'label' must be a string")
    attributes = item.get("attributes", {})
    if not isinstance(attributes, Mapping):
        raise ValueError(f"tiers[{i}] ({name}): 'attributes' must be a table")
    return Tier(name, float(item.get("min_score", -math.inf)), label, dict(attributes))
