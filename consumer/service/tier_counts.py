"""What a partition counts besides its users' states: how many of its users are in each
tier (the **tier population**), and the propensity labels resolved, by the tier at the
snapshot, control group or treated, and outcome (the **conversion per tier**).

Both are per input partition, kept in the partition's own Redis Cluster slot
(:mod:`consumer.service.keys`), and move in the same transaction as the states they
count (step 3a of :mod:`consumer.service.checkpoint`): a batch writes its users' states
and the counts' changes together or not at all, so the counts are exactly-once like the
states, whatever crashes, and summed over partitions they are the deployment's. A user
who ends (forgotten, or silent past the state's time-to-live) leaves their tier's count
in the same transaction that deletes their state.

>>> counts = TierCounts({"vip": 2})
>>> counts.add(TierCounts({"vip": -1, "casual": 1},
...                       {conversion_key("vip", control=False, converted=True): 1}))
>>> counts.population, counts.conversions
({'vip': 1, 'casual': 1}, {'treated:converted:vip': 1})
>>> conversion_labels("treated:converted:vip")
('vip', 'treated', 'converted')

A state written before tierstream counted its users has no counts: the service refuses
it until ``tierstream state recount`` has counted them.

>>> from consumer.service.state_store import MemoryStateStore
>>> store = MemoryStateStore()
>>> store.record_partition_count("user-events", 2)   # a fresh state: counted from the start
2
>>> check_counted(store, "user-events", prefix="ts")
>>> store.counted.clear()                              # as if written by an older version
>>> check_counted(store, "user-events", prefix="ts")
Traceback (most recent call last):
...
consumer.service.errors.PopulationsNotCounted: the state under key prefix 'ts' was written ...
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol

from consumer.service.errors import PopulationsNotCounted

__all__ = [
    "GROUPS",
    "OUTCOMES",
    "TierCounts",
    "check_counted",
    "conversion_key",
    "conversion_labels",
]

#: Users held out of campaigns, and everyone else.
GROUPS: Final = ("treated", "control")
#: Whether the user bought within the label horizon after the snapshot.
OUTCOMES: Final = ("converted", "not_converted")
#: The tier of a snapshot taken before the user had one (states saved before the tier
#: at the snapshot was kept).
NO_TIER: Final = "none"


@dataclass
class TierCounts:
    """Users per tier, and resolved labels per :func:`conversion_key`."""

    population: dict[str, int] = field(default_factory=dict)
    conversions: dict[str, int] = field(default_factory=dict)

    def add(self, other: TierCounts) -> None:
        """Add ``other``'s counts (changes, or another partition's) to these."""
        _add(self.population, other.population)
        _add(self.conversions, other.conversions)


def _add(into: dict[str, int], more: Mapping[str, int]) -> None:
    for key, n in more.items():
        into[key] = into.get(key, 0) + n


def conversion_key(tier: str | None, *, control: bool, converted: bool) -> str:
    """The field a resolved label is counted under: ``group:outcome:tier`` (the tier
    last: a tier name may contain anything)."""
    group = GROUPS[1] if control else GROUPS[0]
    outcome = OUTCOMES[0] if converted else OUTCOMES[1]
    return f"{group}:{outcome}:{tier or NO_TIER}"


def conversion_labels(key: str) -> tuple[str, str, str]:
    """(tier, group, outcome) of a :func:`conversion_key`."""
    group, outcome, tier = key.split(":", 2)
    return tier, group, outcome


class CountRegistry(Protocol):
    """Where the topics whose populations are counted are kept (the state store)."""

    def populations_counted(self, topic: str) -> bool:
        """Whether ``topic``'s tier populations count every user."""
        ...


def check_counted(store: CountRegistry, topic: str, *, prefix: str) -> None:
    """Raise PopulationsNotCounted if ``topic``'s state predates the tier populations
    (exported counts would be wrong; ``tierstream state recount`` counts them)."""
    if not store.populations_counted(topic):
        raise PopulationsNotCounted(
            f"the state under key prefix {prefix!r} was written before tierstream counted "
            f"users by tier (topic {topic}): stop every instance, then run `tierstream "
            "state recount` (docs/runbook.md)"
        )
