"""Tier populations and conversion counts through the batch step (no server, issue 10):
after any stream, with users forgotten, users expiring (silent past the state's
time-to-live) and users coming back, each partition's population per tier is exactly its
stored users' tiers, and its conversion counts are exactly the labels its users
resolved; neither depends on where the stream was cut into batches."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import orjson
import pytest

from consumer.demo.synthetic import GeneratorConfig, generate
from consumer.service.checkpoint import CheckpointStats
from consumer.service.partitioning import partition_of
from consumer.service.records import InputRecord, OutputRecord
from consumer.service.state_store import MemoryStateStore
from consumer.service.tier_config import DEFAULT_TIERS_FILE, load_engine
from consumer.service.tier_counts import TierCounts, conversion_key
from consumer.tools.replay import Replay
from online_models.features import DAY_MS
from online_models.state_codec import state_json
from schemas.decode import parse_rfc3339_ms

PARTITIONS = 3
#: Short enough that users silent for part of the 90 days expire, and some come back.
TTL_DAYS = 12


def stream() -> list[InputRecord]:
    """A generated stream on three partitions (by user id, as Kafka routes them), with a
    forget request for every 25th user in the middle of it."""
    records = list(generate(GeneratorConfig(users=120, events=5000, seed=3, days=90)))
    users = sorted({r.key for r in records if r.key})
    middle = orjson.loads(records[len(records) // 2].value or b"{}")["timestamp"]
    forgets = [
        orjson.dumps(
            {
                "tierstream_control": "forget",
                "user_id": u.decode(),
                "request_id": f"r-{u.decode()}",
                "requested_at": middle,
            }
        )
        for u in users[::25]
    ]
    values = [(r.key, r.value) for r in records]
    half = len(values) // 2
    requests = [(orjson.loads(f)["user_id"].encode(), f) for f in forgets]
    values = values[:half] + requests + values[half:]
    offsets: Counter[int] = Counter()
    out = []
    for key, value in values:
        p = partition_of(key.decode(), PARTITIONS) if key else 0
        out.append(InputRecord("events", p, offsets[p], None, key, value))
        offsets[p] += 1
    return out


def run(records: Sequence[InputRecord], batch_size: int) -> tuple[MemoryStateStore, Counter[str]]:
    """Replay ``records``; the store, and the labels resolved as the metrics count them."""
    resolved: Counter[str] = Counter()

    def count(stats: CheckpointStats, _batch: Sequence[InputRecord]) -> None:
        for r in stats.outcome.resolved:
            resolved[conversion_key(r.tier, control=r.control, converted=r.label)] += 1

    outputs: list[OutputRecord] = []
    engine = load_engine(DEFAULT_TIERS_FILE, state_ttl_days=TTL_DAYS)
    replay = Replay(engine, emit=outputs.append, on_batch=count, batch_size=batch_size)
    replay.run(records)
    store = replay.store
    assert isinstance(store, MemoryStateStore)
    return store, resolved


def stored_tiers(store: MemoryStateStore) -> dict[tuple[str, int], Counter[str]]:
    tiers: dict[tuple[str, int], Counter[str]] = {
        ("events", p): Counter() for p in range(PARTITIONS)
    }
    for user, raw in store.users.items():
        tiers[("events", partition_of(user, PARTITIONS))][state_json(raw)["tier"]] += 1
    return tiers


def ms(timestamp: int | str) -> int:
    return timestamp if isinstance(timestamp, int) else parse_rfc3339_ms(timestamp)


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {k: n for k, n in counts.items() if n}


@pytest.fixture(scope="module")
def records() -> list[InputRecord]:
    return stream()


def test_populations_are_the_stored_users_tiers_after_forgets_and_expiries(
    records: list[InputRecord],
) -> None:
    store, resolved = run(records, batch_size=97)
    parts = [("events", p) for p in range(PARTITIONS)]
    counts = store.tier_counts(parts)
    for tp, tiers in stored_tiers(store).items():
        assert nonzero(counts[tp].population) == dict(tiers), tp
    # non-vacuous: users ended both ways, and populations went down as well as up
    users = {r.key for r in records if r.key}
    assert len(store.users) < len(users)
    forgets = [orjson.loads(r.value or b"") for r in records if b"control" in (r.value or b"")]
    assert forgets
    for f in forgets:  # gone, or back with a lifetime that started after the erasure
        raw = store.users.get(f["user_id"])
        assert raw is None or state_json(raw)["born_ms"] >= ms(f["requested_at"])
    # conversions: per partition, summed, exactly the labels the batches resolved
    total = TierCounts()
    for tp in parts:
        total.add(counts[tp])
    assert nonzero(total.conversions) == dict(resolved) and sum(resolved.values()) > 20
    assert {k.split(":")[0] for k in resolved} == {"treated", "control"}


def test_expired_users_leave_their_tier_and_the_store(records: list[InputRecord]) -> None:
    """Every user whose last event is more than the time-to-live before their partition's
    watermark has no state left (their timer ended them), and nobody else is missing."""
    store, _ = run(records, batch_size=500)
    last: dict[str, int] = {}
    for r in records:
        body = orjson.loads(r.value or b"{}")
        if "event_type" in body and r.key:
            last[r.key.decode()] = max(last.get(r.key.decode(), 0), ms(body["timestamp"]))
    silent = {
        u
        for u, t in last.items()
        if store.watermarks[("events", partition_of(u, PARTITIONS))] - t > TTL_DAYS * DAY_MS
    }
    assert silent and not silent & set(store.users)


@pytest.mark.parametrize("batch_size", [1, 13, 5000])
def test_the_counts_do_not_depend_on_the_batches(
    records: list[InputRecord], batch_size: int
) -> None:
    reference, _ = run(records, batch_size=97)
    store, _ = run(records, batch_size=batch_size)
    parts = [("events", p) for p in range(PARTITIONS)]
    got, want = store.tier_counts(parts), reference.tier_counts(parts)
    assert {tp: nonzero(c.population) for tp, c in got.items()} == {
        tp: nonzero(c.population) for tp, c in want.items()
    }
    assert {tp: c.conversions for tp, c in got.items()} == {
        tp: c.conversions for tp, c in want.items()
    }
