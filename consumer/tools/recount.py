"""``tierstream state recount``: count each partition's users by tier from their states,
with the service stopped: for a state written before tierstream counted users by tier
(the service refuses it until then), and after a repartition moved users between
partitions (``tierstream state repartition`` runs it itself).

For each partition of the topic, every user state is read, a thousand per round trip.
Each readable state:

- loses any Redis time-to-live it has: versions before this one let Redis expire silent
  users, while the engine now ends them itself (:mod:`online_models.engine`), so that
  their tier's count goes with them; a key Redis expires would leave its count behind;
- gets the timer that ends it if it has none (its re-scores had stopped at
  ``max_silence``, and it was waiting for Redis to expire it);
- counts for its tier.

Then the partition's population is replaced by the count, in one MULTI/EXEC in the
partition's slot; last, the topic is marked counted (the service starts). A state that
cannot be read (the service sets such users aside, ``unusable_state``) is not counted and
keeps its time-to-live. Conversion counts are left as they are: labels resolved before
cannot be recounted (for a state of an older version they start at zero).

**Idempotent.** Everything it writes is what a second run would write again: run it
again after a crash.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from consumer.service.redis_store import RedisStateStore
from consumer.tools.key_scan import CHUNK, chunks, text
from online_models.engine import Horizons
from online_models.state_codec import decode_state, encode_state
from online_models.user_state import UserState

__all__ = ["Recount", "RecountReport"]


@dataclass
class RecountReport:
    """What a recount counted (and, unless dry, wrote)."""

    topic: str
    partitions: int
    population: Counter[str] = field(default_factory=Counter)
    #: States that cannot be read: not counted.
    unreadable: int = 0
    #: States whose Redis time-to-live was removed.
    persisted: int = 0
    #: States given the timer that ends them.
    armed: int = 0

    @property
    def users(self) -> int:
        """Users counted."""
        return sum(self.population.values())


class Recount:
    """Counts ``topic``'s users in ``store``, partition by partition, for ``partitions``
    partitions; ``horizons`` says when a state with no timer ends (see the module
    docstring); ``say`` gets one progress line per partition."""

    def __init__(
        self,
        store: RedisStateStore,
        topic: str,
        partitions: int,
        horizons: Horizons,
        *,
        dry_run: bool = False,
        say: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.store = store
        self.keys = store.keys
        self.redis: Any = store.client
        self.topic = topic
        self.partitions = partitions
        self.horizons = horizons
        self.dry_run = dry_run
        self.say = say

    def run(self) -> RecountReport:
        """Count every partition, then mark the topic counted (not when dry)."""
        report = RecountReport(self.topic, self.partitions)
        for p in range(self.partitions):
            population = self._partition(p, report)
            report.population.update(population)
            self.say(f"partition {p} of {self.partitions}: {sum(population.values()):,} users")
        if not self.dry_run:
            self.redis.sadd(self.keys.counted, self.topic)
        return report

    def _partition(self, p: int, report: RecountReport) -> Counter[str]:
        keys, topic = self.keys, self.topic
        population: Counter[str] = Counter()
        pattern = keys.users_pattern(topic, p)
        found = (text(k) for k in self.redis.scan_iter(match=pattern, count=CHUNK))
        for chunk in chunks(found):
            users = [home[2] for home in map(keys.parse_user, chunk) if home is not None]
            reads = self.redis.pipeline(transaction=False)
            for u in users:
                reads.get(keys.user(topic, p, u))
                reads.pttl(keys.user(topic, p, u))
            values = reads.execute()
            writes = self.redis.pipeline(transaction=False)
            for i, u in enumerate(users):
                raw, ttl_ms = values[2 * i], int(values[2 * i + 1])
                state = _readable(raw)
                if state is None:
                    report.unreadable += raw is not None
                    continue
                if state.tier is not None:
                    population[state.tier] += 1
                if ttl_ms > 0:
                    report.persisted += 1
                    writes.persist(keys.user(topic, p, u))
                if state.due_ms < 0 and state.features.events:
                    report.armed += 1
                    state.due_ms = self.horizons.next_due(state)
                    writes.set(keys.user(topic, p, u), encode_state(state), xx=True)
                    writes.zadd(keys.timers(topic, p), {u: state.due_ms})
            if not self.dry_run:
                writes.execute()
        if not self.dry_run:
            counts = self.redis.pipeline(transaction=True)
            counts.delete(keys.populations(topic, p))
            if population:
                counts.hset(keys.populations(topic, p), mapping=dict(population))
            counts.execute()
        return population


def _readable(raw: bytes | None) -> UserState | None:
    """The state in ``raw``; None if there is none or it cannot be read."""
    if raw is None:
        return None
    try:
        return decode_state(raw)
    except ValueError:
        return None
