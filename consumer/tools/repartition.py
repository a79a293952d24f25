"""``tierstream state repartition``: after the input topic got more partitions, move
every user's state and timer to the partition the new count routes them to.

A user lives in the partition their records are routed to, and their state in that
partition's Redis slot (:mod:`consumer.service.keys`). Give the topic more partitions and
Kafka's partitioner sends some users' new records elsewhere: without a move, the new
partition's owner would start them afresh. So the service refuses a count other than the
one recorded with the state (:mod:`consumer.service.partitioning`), and this tool, run
with every instance stopped:

1. refuses while any instance of the group is up, or any old partition's outbox holds
   unpublished outputs (the next start publishes them: starting an instance publishes
   the outboxes of its partitions before it refuses the new count);
2. for each old partition, moves each user the new count routes elsewhere: the state
   (with the time-to-live it has left, if a version that let Redis expire states wrote
   it) and the timer, each written to the new partition *before* it is deleted from the
   old one;
3. sets each new partition's event-time watermark to the largest old one (the stream's
   event time goes on there; a moved user's timer fires when it passes its time, not
   earlier); the old partitions keep their watermarks and applied offsets (their records
   were all applied: the service stopped caught up), the new partitions have none (they
   are read from their first record);
4. counts every partition's users by tier again (:mod:`consumer.tools.recount`): a moved
   user now counts where they live; the conversion counts stay where their labels were
   resolved (summed over partitions, they are the same);
5. records the new count: the service starts again.

**Idempotent.** A run that stops halfway (a crash, Redis going away) has recorded
nothing: run it again. A user already moved is found in their new partition and left
there; one copied and not yet deleted is copied again (the same bytes) and deleted. A
user with *different* states in the old and the new partition had events applied under
both counts (an instance ran on after the topic grew): nothing is overwritten, the users
are named, and the count is not recorded (docs/runbook.md).

**Order of a moved user's events.** Their records in the old partition were all applied
before the move (the service stopped caught up); their later records land in the new
partition and are applied after it. Nothing orders the two partitions otherwise: the
move is the boundary.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from consumer.service.errors import UserError
from consumer.service.partitioning import partition_of
from consumer.service.redis_store import RedisStateStore
from consumer.tools.key_scan import CHUNK, chunks, text
from consumer.tools.recount import Recount, RecountReport
from online_models.engine import Horizons

__all__ = ["EXAMPLES", "Repartition", "Report"]

#: Users a refusal names at most.
EXAMPLES: Final = 5


@dataclass
class Report:
    """What a repartition did (or, dry, would do)."""

    topic: str
    old: int
    new: int
    users: int = 0
    moved: int = 0
    timers_moved: int = 0
    watermark: int | None = None
    #: Users with different states in their old and their new partition.
    conflicts: list[str] = field(default_factory=list)
    #: The tier populations counted after the move (None: dry, or nothing to move).
    counted: RecountReport | None = None


class Repartition:
    """Moves ``topic``'s users in ``store`` to the partitions ``new`` routes them to
    (see the module docstring); ``say`` gets one progress line per old partition, and
    one per new partition counted. ``horizons``: the deployment's (a recount arms the
    expiry of a state of an older version that has no timer)."""

    def __init__(
        self,
        store: RedisStateStore,
        topic: str,
        new: int,
        *,
        dry_run: bool = False,
        say: Callable[[str], None] = lambda _: None,
        horizons: Horizons | None = None,
    ) -> None:
        if new <= 0:
            raise UserError(f"the new partition count must be > 0, not {new}")
        self.store = store
        self.keys = store.keys
        self.redis: Any = store.client
        self.topic = topic
        self.new = new
        self.dry_run = dry_run
        self.say = say
        self.horizons = horizons or Horizons()

    def old_count(self) -> int:
        """The count the state was written for."""
        old = self.store.partition_counts().get(self.topic)
        if old is None:
            raise UserError(
                f"no state of topic {self.topic!r} under key prefix {self.store.prefix!r}: "
                "nothing to repartition (check TIERSTREAM_INPUT_TOPIC and TIERSTREAM_KEY_PREFIX)"
            )
        return old

    def pending_outboxes(self, old: int) -> dict[int, int]:
        """Old partitions whose outbox holds outputs, with how many."""
        pipe = self.redis.pipeline(transaction=False)
        for p in range(old):
            pipe.llen(self.keys.outbox(self.topic, p))
        return {p: int(n) for p, n in enumerate(pipe.execute()) if n}

    def run(self) -> Report:
        """Move, then record the new count (not when dry, nor after a conflict)."""
        old = self.old_count()
        report = Report(self.topic, old, self.new)
        if old == self.new:
            return report
        pending = self.pending_outboxes(old)
        if pending:
            where = ", ".join(f"{p} ({n})" for p, n in sorted(pending.items()))
            raise UserError(
                f"outputs of partitions {where} of {self.topic} are saved and not yet "
                "published: start the service once (it publishes them, then refuses the "
                "new partition count), stop it, and run this again"
            )
        for p in range(old):
            users, moved = self._move_users(p, report)
            timers = self._move_timers(p)
            report.users += users
            report.moved += moved
            report.timers_moved += timers
            verb = "to move" if self.dry_run else "moved"
            self.say(
                f"partition {p} of {old}: {users:,} users, {moved:,} {verb} ({timers:,} timers)"
            )
        report.watermark = self._watermarks(old)
        if report.conflicts:
            shown = ", ".join(repr(u) for u in report.conflicts[:EXAMPLES])
            raise UserError(
                f"{len(report.conflicts)} users have different states in their old and their "
                f"new partition ({shown}...): records were applied after the topic grew. "
                "Nothing was overwritten, the partition count is not recorded; see "
                "docs/runbook.md"
            )
        if not self.dry_run:
            recount = Recount(self.store, self.topic, self.new, self.horizons, say=self.say)
            report.counted = recount.run()
            self.redis.hset(self.keys.partitions, self.topic, self.new)
        return report

    def _move_users(self, p: int, report: Report) -> tuple[int, int]:
        """Move partition ``p``'s users the new count routes elsewhere: (users, moved)."""
        keys, topic = self.keys, self.topic
        pattern = keys.users_pattern(topic, p)
        seen = moved = 0
        for chunk in chunks(text(k) for k in self.redis.scan_iter(match=pattern, count=CHUNK)):
            homes = [keys.parse_user(k) for k in chunk]
            users = [home[2] for home in homes if home is not None]
            seen += len(users)
            going = [(u, partition_of(u, self.new)) for u in users]
            going = [(u, q) for u, q in going if q != p]
            if not going:
                continue
            reads = self.redis.pipeline(transaction=False)
            for u, q in going:
                reads.get(keys.user(topic, p, u))
                reads.pttl(keys.user(topic, p, u))
                reads.get(keys.user(topic, q, u))
            values = reads.execute()
            rows = [
                (u, q, values[3 * i], int(values[3 * i + 1]), values[3 * i + 2])
                for i, (u, q) in enumerate(going)
            ]
            fine = []
            for u, q, value, ttl_ms, there in rows:
                if value is None:
                    continue  # expired meanwhile
                if there is not None and there != value:
                    report.conflicts.append(u)
                    continue
                fine.append((u, q, value, ttl_ms))
            moved += len(fine)
            if not self.dry_run and fine:
                self._copy_then_delete(p, fine)
        return seen, moved

    def _copy_then_delete(self, p: int, rows: Sequence[tuple[str, int, bytes, int]]) -> None:
        keys, topic = self.keys, self.topic
        writes = self.redis.pipeline(transaction=False)
        for u, q, value, ttl_ms in rows:
            writes.set(keys.user(topic, q, u), value, px=ttl_ms if ttl_ms > 0 else None)
        writes.execute()
        deletes = self.redis.pipeline(transaction=False)
        for u, _, _, _ in rows:
            deletes.delete(keys.user(topic, p, u))
        deletes.execute()

    def _move_timers(self, p: int) -> int:
        """Move partition ``p``'s timers of users routed elsewhere: how many."""
        keys, topic = self.keys, self.topic
        source = keys.timers(topic, p)
        rows = ((text(m), int(s)) for m, s in self.redis.zscan_iter(source, count=CHUNK))
        moved = 0
        for chunk in chunks(rows):
            going = [(u, partition_of(u, self.new), due) for u, due in chunk]
            going = [(u, q, due) for u, q, due in going if q != p]
            moved += len(going)
            if self.dry_run or not going:
                continue
            writes = self.redis.pipeline(transaction=False)
            for u, q, due in going:
                writes.zadd(keys.timers(topic, q), {u: due})
            writes.execute()
            self.redis.zrem(source, *[u for u, _, _ in going])
        return moved

    def _watermarks(self, old: int) -> int | None:
        """The largest old watermark, set on every new partition that has a lower one."""
        keys, topic = self.keys, self.topic
        marks = self.store.get_many([keys.watermark(topic, p) for p in range(self.new)])
        olds = [int(v) for v in marks[:old] if v is not None]
        if not olds:
            return None
        top = max(olds)
        if not self.dry_run:
            writes = self.redis.pipeline(transaction=False)
            for q in range(old, self.new):
                if marks[q] is None or int(marks[q] or 0) < top:
                    writes.set(keys.watermark(topic, q), top)
            writes.execute()
        return top
