"""Expiry: with a state time-to-live of a few weeks (``TIERSTREAM_STATE_TTL_DAYS``, event
time), some users fall silent while the rest of the stream goes on for months of event
time (so the silent users' inactivity timers fire, then the one that ends them), then the
silent users come back.

What it proves: a user silent past the TTL has nothing left in Redis: no key names them
and no shared key (a partition's timers, outbox, a set) holds them as a member or value
(their last timer deleted their state, and timers never recreate it); their tier's
population let them go in the same transaction (the tier populations equal the stored
users' tiers); users with events keep theirs; and a user who comes back starts a new
lifetime whose tier changes' ``event_id``s never repeat one of their earlier lifetime (a
subscriber de-duplicating by ``event_id`` would drop them). Non-vacuous: each silent user
had tier changes before and gets some after returning.

The stream: all users active for 4 event days; then only the busy users, in chunks of 10
event days half a second apart (the silent users' timers fire in between, the last one
past the TTL); the check of what is left; the silent users' return.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from tests.chaos import invariants as inv
from tests.chaos.harness import Endpoints, StackControl
from tests.chaos.scenario import Run, conclude

DAY_MS = 86_400_000
START_MS = 1_767_571_200_000  # 2026-01-05T00:00:00Z


@dataclass(frozen=True)
class Plan:
    silent: int
    background: int
    ttl_days: float  # event time
    chunks: int  # chunks of 10 event days of background events
    timeout: float


SMALL = Plan(silent=4, background=40, ttl_days=20, chunks=4, timeout=60)
FULL = Plan(silent=20, background=300, ttl_days=30, chunks=6, timeout=180)


def _event(user: str, n: int, t_ms: int, kind: str = "page_view") -> tuple[bytes, bytes]:
    body: dict[str, object] = {
        "event_id": f"{user}-{n}",
        "user_id": user,
        "event_type": kind,
        "timestamp": t_ms,
    }
    if kind == "purchase":
        body.update(amount=80.0 + n, currency="EUR")
    return user.encode(), orjson.dumps(body)


def _days(users: list[str], first: int, last: int) -> list[tuple[bytes, bytes]]:
    """One event per user per event day in ``[first, last)`` (a purchase every 5th)."""
    return [
        _event(
            u,
            d,
            START_MS + d * DAY_MS + 3_600_000 * (i % 20),
            "purchase" if (d + i) % 5 == 0 else "page_view",
        )
        for d in range(first, last)
        for i, u in enumerate(users)
    ]


def expiry_scenario(
    endpoints: Endpoints, workdir: Path, model: Path, plan: Plan
) -> tuple[Run, dict[str, object]]:
    env = {"TIERSTREAM_STATE_TTL_DAYS": repr(plan.ttl_days)}
    run = Run(endpoints, workdir, model_file=model, env=env)
    try:
        cluster, v = run.cluster, run.verdict
        cluster.start_monitors()
        cluster.add("a").start()
        cluster.wait_group(1)
        silent = [f"quiet{i:03d}" for i in range(plan.silent)]
        background = [f"busy{i:04d}" for i in range(plan.background)]
        fed = run.feed(_days(silent + background, 0, 4), plan.timeout)
        t_quiet = run.timeline.note("the silent users' last events are applied")
        last_day = 4
        for _ in range(plan.chunks):
            fed &= run.feed(_days(background, last_day, last_day + 10), plan.timeout)
            last_day += 10
            time.sleep(0.5)
        assert last_day - 4 > plan.ttl_days + 7, "the silent users' end must be fed past"
        run.timeline.note(f"{time.monotonic() - t_quiet:.1f}s since the silent users' last events")
        left = {u: cluster.redis.mentions(u) for u in silent}
        v.check(
            "a user silent past the TTL has nothing left in Redis",
            [f"{u}: {'; '.join(found[:4])}" for u, found in left.items() if found],
        )
        kept = cluster.redis.user_states()
        v.check(
            "users with events keep their state",
            [f"{u}: no state" for u in background if u not in kept],
        )
        inv.populations_exact(v, *cluster.redis.populations())
        back_ms = START_MS + (last_day + 5) * DAY_MS
        t_back = run.timeline.note("the silent users come back")
        returning = [
            _event(u, 100 + k, back_ms + k * 3_600_000, "purchase" if k == 1 else "page_view")
            for u in silent
            for k in range(3)
        ]
        fed &= run.feed(returning, plan.timeout)
        v.check("every phase applied in time", [] if fed else ["a phase was not applied in time"])
        out = run.finish(plan.timeout)
        # Not the single-lifetime invariants of check_end (seq 1..n, one body per event
        # id): every user expires in the lull and starts again.
        v.check(
            "caught up: every record applied, published and committed in time",
            [] if out.caught_up else ["stalled:\n" + out.stall],
        )
        inv.no_crash(v, cluster.crashes, out.stops)
        inv.offsets_done(v, out.end, out.applied, out.outbox, out.committed)
        before: dict[str, set[str]] = defaultdict(set)
        after: dict[str, list[str]] = defaultdict(list)
        for rec in out.changes:
            body = orjson.loads(rec.value or b"")
            if body["user_id"] not in silent:
                continue
            when = _ms(body["event_time"])
            (after[body["user_id"]].append if when >= back_ms else before[body["user_id"]].add)(
                body["event_id"]
            )
        v.check(
            "a returning user's new tier changes never repeat an earlier event_id",
            [
                f"{u}: {len(set(after[u]) & before[u])} of {len(after[u])} new changes reuse "
                f"event ids of the first lifetime, e.g. {sorted(set(after[u]) & before[u])[0]}"
                for u in silent
                if set(after[u]) & before[u]
            ],
        )
        v.check(
            "non-vacuous: each silent user changed tier before leaving and after returning",
            [
                f"{u}: {len(before[u])} changes before, {len(after[u])} after"
                for u in silent
                if not before[u] or not after[u]
            ],
        )
        rows: dict[str, object] = {
            "silent users": plan.silent,
            "users with events": plan.background,
            "TTL, event days": plan.ttl_days,
            "event days": last_day,
            "silent users with something left": sum(1 for found in left.values() if found),
            "returning users whose event ids repeat": sum(
                1 for u in silent if set(after[u]) & before[u]
            ),
            "wall time silent before the check, s": round(t_back - t_quiet, 1),
            "runtime, s": round(time.monotonic() - run.started, 1),
        }
        return run, rows
    except BaseException:
        run.close()
        raise


def _ms(text: str) -> int:
    from schemas.decode import parse_rfc3339_ms

    return parse_rfc3339_ms(text)


@pytest.mark.chaos
@pytest.mark.integration
@pytest.mark.slow
def test_expiry_small(small_endpoints: Endpoints, trained_model: Path, tmp_path: Path) -> None:
    """Four silent users among forty busy ones, a 3-second TTL."""
    run, _ = expiry_scenario(small_endpoints, tmp_path, trained_model, SMALL)
    conclude(run, "expiry (small)")


@pytest.mark.chaos
@pytest.mark.timeout(900)
def test_expiry_full(chaos_stack: StackControl, trained_model: Path, workdir: Path) -> None:
    """Twenty silent users among three hundred busy ones, a 4-second TTL."""
    run, rows = expiry_scenario(chaos_stack.endpoints, workdir, trained_model, FULL)
    conclude(
        run,
        "expiry",
        rows,
        key="6-expiry",
        title="Expiry and a new lifetime",
        command="make chaos PYTEST_ARGS='-k test_expiry_full'",
    )
