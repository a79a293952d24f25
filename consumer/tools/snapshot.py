"""Everyone's tier at once: one JSON line per user, from a replay's memory or a
deployment's Redis.

A line holds ``user_id``, ``tier``, ``segment``, ``propensity``, ``value_score``,
the other heads' predictions (``propensity_long``: a purchase within the long horizon;
``churn_risk``: no event within the churn horizon; ``expected_purchases`` and
``expected_value`` over the long horizon; the horizons are the tier config's
``[models]``), ``model_version``, ``features`` and ``as_of`` (the event time the scores
are computed at). Everything but ``user_id`` and ``as_of`` is what
:meth:`TierEngine.explain` says (the scores are taken from its scores, null when the
engine has none).

>>> from consumer.service.tier_config import DEFAULT_TIERS_FILE, load_engine
>>> from online_models.event import Event
>>> engine = load_engine(DEFAULT_TIERS_FILE)
>>> state = UserState.new()
>>> _ = engine.apply(state, Event("e1", "u1", "purchase", 0, 50.0), emitted_at_ms=0)
>>> line = snapshot_line("u1", state, engine)
>>> list(line)
['user_id', 'tier', 'segment', 'propensity', 'value_score', 'propensity_long', 'churn_risk',
 'expected_purchases', 'expected_value', 'model_version', 'features', 'as_of']
>>> line["tier"] in engine.policy.names, line["features"]["purchases"]
(True, 1)
>>> line["as_of"], snapshot_line("u1", state, engine, as_of_ms=86_400_000)["as_of"]
('1970-01-01T00:00:00.000Z', '1970-01-02T00:00:00.000Z')

Users are listed in ``user_id`` order, so two snapshots of the same state are identical.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Final

import orjson

from consumer.service.errors import StateStoreError, StateStoreUnavailable, UserError
from consumer.service.redis_connection import REDIS_FAILURES
from consumer.service.redis_store import RedisStateStore
from consumer.service.state_store import MemoryStateStore
from consumer.service.tier_counts import TierCounts
from online_models.engine import EXTRA_SCORES, TierEngine
from online_models.state_codec import decode_state
from online_models.timefmt import iso_utc_ms
from online_models.user_state import UserState

__all__ = [
    "SCAN_COUNT",
    "RedisStates",
    "line_from_view",
    "memory_states",
    "snapshot_line",
    "snapshot_lines",
    "state_time",
    "write_lines",
]

#: Keys per SCAN step and per MGET: one round trip per thousand users each way.
SCAN_COUNT: Final = 1000
Progress = Callable[[int], None]


def snapshot_line(
    user_id: str, state: UserState, engine: TierEngine, as_of_ms: int | None = None
) -> dict[str, Any]:
    """The snapshot line of one user, scored as of ``as_of_ms`` (default: the newest event
    time their state has seen, :func:`state_time`)."""
    return line_from_view(user_id, engine.explain(state, _as_of(state, as_of_ms)))


def state_time(state: UserState) -> int:
    """The newest event time ``state`` has seen: its last event, or a timer that fired
    after it (an inactivity re-score moves the tier without an event)."""
    return max(state.features.last_ms, state.rescored_ms)


def _as_of(state: UserState, as_of_ms: int | None) -> int:
    return state_time(state) if as_of_ms is None else as_of_ms


def line_from_view(user_id: str, view: dict[str, Any]) -> dict[str, Any]:
    """The snapshot line for what :meth:`TierEngine.explain` said about ``user_id``."""
    scores = view["scores"]
    return {
        "user_id": user_id,
        "tier": view["tier"],
        "segment": scores.get("segment"),
        "propensity": scores.get("propensity"),
        "value_score": scores.get("value_score"),
        **{name: scores.get(name) for name in EXTRA_SCORES},
        "model_version": view["model_version"],
        "features": view["features"],
        "as_of": iso_utc_ms(view["as_of_ms"]),
    }


def snapshot_lines(
    states: Iterable[tuple[str, bytes]],
    engine: TierEngine,
    as_of_ms: int | None = None,
    *,
    tiers: Counter[str] | None = None,
) -> Iterator[bytes]:
    """Encoded snapshot lines for stored ``(user_id, state JSON)`` pairs; ``tiers``, if
    given, counts the lines per tier."""
    for user_id, raw in states:
        state = decode_state(raw)
        line = snapshot_line(user_id, state, engine, as_of_ms)
        if tiers is not None:
            tiers[line["tier"]] += 1
        yield orjson.dumps(line)


def memory_states(store: MemoryStateStore) -> Iterator[tuple[str, bytes]]:
    """A memory store's users in ``user_id`` order."""
    for user_id in sorted(store.users):
        yield user_id, store.users[user_id]


class RedisStates:
    """The users stored under one key prefix of a deployment's Redis, in ``user_id``
    order.

    The user keys of every partition (:mod:`consumer.service.keys`) are collected in one
    ``SCAN`` pass (``COUNT 1000``; Redis is never blocked the way ``KEYS`` would block it;
    on Redis Cluster, one pass per primary), sorted, and read back a thousand at a time,
    each thousand in one round trip. One pass over every key, not one per partition: a
    ``SCAN`` whose pattern names one slot still visits every key of a single server (and
    of a cluster node before Redis 7.4). A user whose state was deleted in between is left
    out; a user stored under two topics (a file replayed into the deployment's Redis) is
    read from the store's input topic, else from the first topic by name.
    """

    def __init__(self, store: RedisStateStore) -> None:
        self.store = store
        self.skipped = 0

    def homes(self) -> dict[str, str]:
        """Every user id under the prefix, sorted, with the key of their state."""
        keys = self.store.keys
        prefer = self.store.topic
        found: dict[str, tuple[bool, str, str]] = {}
        try:
            for raw in self.store.client.scan_iter(match=keys.all_users, count=SCAN_COUNT):
                key = raw.decode() if isinstance(raw, bytes) else str(raw)
                home = keys.parse_user(key)
                if home is None:
                    continue
                topic, _, user = home
                rank = (topic != prefer, topic, key)
                if user not in found or rank < found[user]:
                    found[user] = rank
        except REDIS_FAILURES as exc:
            raise self._unavailable(exc) from None
        return {user: found[user][2] for user in sorted(found)}

    def user_ids(self) -> list[str]:
        """Every user id under the prefix, sorted."""
        return list(self.homes())

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        homes = list(self.homes().items())
        for i in range(0, len(homes), SCAN_COUNT):
            chunk = homes[i : i + SCAN_COUNT]
            try:
                values = self.store.get_many([key for _, key in chunk])
            except REDIS_FAILURES as exc:
                raise self._unavailable(exc) from None
            for (user_id, _), raw in zip(chunk, values, strict=True):
                if raw is None:
                    self.skipped += 1
                else:
                    yield user_id, raw

    def conversions(self) -> dict[str, int]:
        """The propensity labels resolved, by conversion key, summed over every partition
        of every topic with state (:mod:`consumer.service.tier_counts`)."""
        counts = self.store.partition_counts()
        parts = [(t, p) for t, n in sorted(counts.items()) for p in range(n)]
        total = TierCounts()
        try:
            for counted in self.store.tier_counts(parts).values():
                total.add(counted)
        except StateStoreError as exc:  # what the store makes of a Redis failure
            raise self._unavailable(exc) from None
        return total.conversions

    def _unavailable(self, exc: Exception) -> StateStoreUnavailable:
        return self.store.unreachable(exc)


def write_lines(path: str | Path, lines: Iterable[bytes], progress: Progress | None = None) -> int:
    """Write ``lines`` (JSONL) to ``path`` (``-``: standard output); return how many."""
    out: IO[bytes] | None = sys.stdout.buffer if str(path) == "-" else None
    try:
        fh = out or open(path, "wb")  # noqa: SIM115 - closed below unless stdout
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror}") from None
    n = 0
    try:
        for line in lines:
            fh.write(line)
            fh.write(b"\n")
            n += 1
            if progress and n % 1000 == 0:
                progress(n)
    finally:
        if out is None:
            fh.close()
        else:
            fh.flush()
    return n
