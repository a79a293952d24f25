"""``tierstream state repartition --from-legacy``: bring a state written before the
partitioned key layout (tierstream before issue 9) into the current one, in place.

The old layout kept a user at ``<p>:{u:<user_id>}`` and a partition's keys at
``<p>:applied:<topic>:<n>`` (``epoch``, ``outbox``, ``wm``, ``timers`` alike), the models
at ``<p>:model``, ``<p>:contrib:<instance>``, ``<p>:contributors``. Records were routed by
the same partitioner then, so each user goes to the partition the input topic's count
routes them to; each of the input topic's partitions keeps its applied offset, epoch,
watermark, timers and unpublished outputs (the service publishes them at its next start);
the models keep their version and the instances' learning. Then each partition's users
are counted by tier (:mod:`consumer.tools.recount`, which also ends Redis's time-to-live
of the moved states: the engine ends silent users now), and the count is recorded.

Run with every instance stopped. Every key is written in the new layout before its old
one is deleted, and the count is recorded last: a run that stopped halfway is run again.
Keys of other topics (a file replayed into Redis under the old layout) are left as they
are: their users were the deployment's users, and are moved with them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from consumer.service.errors import UserError
from consumer.service.keys import glob_escape
from consumer.service.partitioning import partition_of
from consumer.service.redis_store import RedisStateStore
from consumer.tools.key_scan import CHUNK, chunks, text
from consumer.tools.recount import Recount
from consumer.tools.repartition import EXAMPLES
from online_models.engine import Horizons

__all__ = ["LegacyMigration", "LegacyReport"]

#: The old per-partition keys: ``<p>:<kind>:<topic>:<n>``.
_KINDS: Final = ("applied", "epoch", "wm", "timers", "outbox")


@dataclass
class LegacyReport:
    """What a migration from the old layout did (or, dry, would do)."""

    topic: str
    partitions: int
    users: int = 0
    timers: int = 0
    outputs: int = 0
    models: int = 0


class LegacyMigration:
    """Moves ``store``'s old-layout keys into the current layout for ``topic`` of
    ``partitions`` partitions (see the module docstring); ``horizons``: the deployment's
    (the recount arms the expiry of states with no timer)."""

    def __init__(
        self,
        store: RedisStateStore,
        topic: str,
        partitions: int,
        *,
        dry_run: bool = False,
        say: Callable[[str], None] = lambda _: None,
        horizons: Horizons | None = None,
    ) -> None:
        self.store = store
        self.horizons = horizons or Horizons()
        self.keys = store.keys
        self.redis: Any = store.client
        self.prefix = store.prefix
        self.topic = topic
        self.partitions = partitions
        self.dry_run = dry_run
        self.say = say

    def _old(self, kind: str, n: int) -> str:
        return f"{self.prefix}:{kind}:{self.topic}:{n}"

    def _new(self, kind: str, n: int) -> str:
        keys, topic = self.keys, self.topic
        return {
            "applied": keys.applied,
            "epoch": keys.epoch,
            "wm": keys.watermark,
            "timers": keys.timers,
            "outbox": keys.outbox,
        }[kind](topic, n)

    def run(self) -> LegacyReport:
        """Move everything, then record the partition count."""
        recorded = self.store.partition_counts().get(self.topic)
        if recorded not in (None, self.partitions):
            raise UserError(
                f"the state of {self.topic} is laid out for {recorded} partitions already; "
                f"the topic has {self.partitions}: run `tierstream state repartition` "
                "without --from-legacy"
            )
        report = LegacyReport(self.topic, self.partitions)
        for n in range(self.partitions):
            timers, outputs = self._partition(n)
            report.timers += timers
            report.outputs += outputs
        report.users = self._users()
        report.models = self._models()
        verb = "to move" if self.dry_run else "moved"
        self.say(
            f"{report.users:,} users, {report.timers:,} timers, {report.outputs:,} unpublished "
            f"outputs and {report.models} model keys {verb}"
        )
        if not self.dry_run:
            Recount(self.store, self.topic, self.partitions, self.horizons, say=self.say).run()
            self.redis.hset(self.keys.partitions, self.topic, self.partitions)
        return report

    def _partition(self, n: int) -> tuple[int, int]:
        """Partition ``n``'s offset, epoch, watermark, timers and outbox: (timers,
        outputs)."""
        r = self.redis
        reads = r.pipeline(transaction=False)
        for kind in ("applied", "epoch", "wm"):
            reads.get(self._old(kind, n))
        reads.zrange(self._old("timers", n), 0, -1, withscores=True)
        reads.lrange(self._old("outbox", n), 0, -1)
        reads.llen(self._new("outbox", n))
        applied, epoch, wm, timers, outbox, pending = reads.execute()
        if self.dry_run:
            return len(timers), len(outbox)
        writes = r.pipeline(transaction=False)
        for kind, value in (("applied", applied), ("epoch", epoch), ("wm", wm)):
            if value is not None:
                writes.set(self._new(kind, n), value)
        if timers:
            writes.zadd(self._new("timers", n), {text(m): s for m, s in timers})
        if outbox and not pending:  # a rerun finds them moved already
            writes.rpush(self._new("outbox", n), *outbox)
        writes.execute()
        r.delete(*[self._old(kind, n) for kind in _KINDS])
        return len(timers), len(outbox)

    def _users(self) -> int:
        """Every old user key, to its partition: how many."""
        head = f"{self.prefix}:{{u:"
        pattern = glob_escape(head) + "*}"
        moved = 0
        clash: list[str] = []
        found = (text(k) for k in self.redis.scan_iter(match=pattern, count=CHUNK))
        for chunk in chunks(found):
            users = [k[len(head) : -1] for k in chunk]
            reads = self.redis.pipeline(transaction=False)
            for key, user in zip(chunk, users, strict=True):
                reads.get(key)
                reads.pttl(key)
                reads.get(self._home(user))
            values = reads.execute()
            writes = self.redis.pipeline(transaction=False)
            done = []
            for i, (key, user) in enumerate(zip(chunk, users, strict=True)):
                value, ttl_ms, there = values[3 * i : 3 * i + 3]
                if value is None:
                    continue
                if there is not None and there != value:
                    clash.append(user)
                    continue
                writes.set(self._home(user), value, px=ttl_ms if ttl_ms > 0 else None)
                done.append(key)
            moved += len(done)
            if not self.dry_run and done:
                writes.execute()
                self._delete(done)
        if clash:
            shown = ", ".join(repr(u) for u in clash[:EXAMPLES])
            raise UserError(
                f"{len(clash)} users have a state in both layouts, and they differ ({shown}"
                "...): the service ran on the new layout before this migration. Nothing "
                "was overwritten; see docs/runbook.md"
            )
        return moved

    def _home(self, user: str) -> str:
        return self.keys.user(self.topic, partition_of(user, self.partitions), user)

    def _delete(self, keys: list[str]) -> None:
        """Delete ``keys`` (one command each: on Redis Cluster they span slots)."""
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.delete(key)
        pipe.execute()

    def _models(self) -> int:
        """The model, the contributors and their contributions: how many keys."""
        r, p, keys = self.redis, self.prefix, self.keys
        members = sorted(text(m) for m in r.smembers(f"{p}:contributors"))
        olds = [f"{p}:model", *[f"{p}:contrib:{i}" for i in members]]
        news = [keys.model, *[keys.contribution(i) for i in members]]
        values = self.store.get_many(olds)
        present = [(o, n, v) for o, n, v in zip(olds, news, values, strict=True) if v]
        if self.dry_run:
            return len(present)
        writes = r.pipeline(transaction=False)
        for _, new, value in present:
            writes.set(new, value)
        if members:
            writes.sadd(keys.contributors, *members)
        writes.execute()
        self._delete([*olds, f"{p}:contributors"])
        return len(present)
