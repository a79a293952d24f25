"""The chaos suite's checks can fail: each invariant of :mod:`tests.chaos.invariants`,
given a live result equal to the clean run, holds; given that result broken in the one
way the invariant is about (a change dropped, a copy altered, a seq skipped, a state off
by one event, a dead letter missing or mislabelled, a lying /readyz, a crash...), it
fails, and no other invariant does. A check that cannot fail would prove nothing.

No server: the "live" side is built from a clean in-memory run, as if read back from
Kafka and Redis. Part of ``make test-unit``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
import pytest

from consumer.demo.synthetic import GeneratorConfig, generate
from consumer.service.partitioning import partition_of
from consumer.service.records import InputRecord
from consumer.service.tier_config import DEFAULT_TIERS_FILE, load_engine
from online_models.state_codec import encode_state, state_json
from online_models.user_state import UserState
from tests.chaos import invariants as inv
from tests.chaos.cluster import Exit

OUT, DLQ = "changes", "dlq"
CONFIG = GeneratorConfig(users=40, events=1_500, seed=3, days=45, bad_fraction=0.02)


@dataclass
class Live:
    """What a perfect deployment would hold: the clean run's outputs and state."""

    inputs: list[InputRecord]
    changes: list[InputRecord]
    dead: list[InputRecord]
    states: dict[str, bytes]
    expected_dead: dict[tuple[int, int], str]
    crashes: list[Exit] = field(default_factory=list)
    stops: dict[str, int | None] = field(default_factory=lambda: {"a": 0, "b": 0})


def _inputs() -> list[InputRecord]:
    """The stream on two partitions, each record where Kafka would route its key."""
    offsets = [0, 0]
    out = []
    for r in generate(CONFIG):
        p = partition_of(r.key.decode(), 2) if r.key else 0
        out.append(InputRecord("in", p, offsets[p], None, r.key, r.value))
        offsets[p] += 1
    return out


def _clean(records: list[InputRecord]) -> inv.Reference:
    return inv.reference(records, load_engine(DEFAULT_TIERS_FILE), output_topic=OUT, dlq_topic=DLQ)


@pytest.fixture(scope="module")
def reference() -> inv.Reference:
    return _clean(_inputs())


def _as_read(values: list[bytes], topic: str) -> list[InputRecord]:
    return [InputRecord(topic, 0, i, None, None, v) for i, v in enumerate(values)]


@pytest.fixture
def live(reference: inv.Reference) -> Live:
    dead = _as_read(reference.dead, DLQ)
    expected = {
        (d["source_partition"], d["source_offset"]): d["reason"]
        for d in (orjson.loads(x) for x in reference.dead)
    }
    return Live(
        _inputs(),
        _as_read(reference.changes, OUT),
        dead,
        dict(reference.store.users),
        expected,
    )


def verdict(live: Live, reference: inv.Reference) -> inv.Verdict:
    """Every invariant a frozen-model scenario checks, on ``live``."""
    v = inv.Verdict()
    inv.states_equal(v, live.states, reference.store.users)
    inv.changes_complete(v, live.changes, reference.changes)
    inv.copies_identical(v, live.changes, key="event_id", what="tier changes")
    inv.copies_identical(v, live.dead, key="source", what="dead letters")
    inv.seq_gap_free(v, live.changes, live.states)
    inv.first_occurrences_in_order(v, live.changes)
    inv.dead_letters(v, live.dead, live.expected_dead)
    inv.no_crash(v, live.crashes, live.stops)
    return v


def test_the_clean_run_passes_every_invariant(live: Live, reference: inv.Reference) -> None:
    v = verdict(live, reference)
    assert not v.violations, v.render()
    assert len(v.checked) == 11
    assert len(reference.changes) > 50 and len(reference.dead) >= 10  # enough to break


def _user_of(value: bytes) -> str:
    return str(orjson.loads(value)["user_id"])


def _with_seq2(live: Live) -> tuple[int, dict[str, object]]:
    """Index and body of a change with seq >= 2 (a user with an earlier change)."""
    for i, rec in enumerate(live.changes):
        body = orjson.loads(rec.value or b"")
        if body["seq"] >= 2:
            return i, body
    raise AssertionError("the test stream has no user with two changes")


def drop_a_change(live: Live) -> None:
    i, _ = _with_seq2(live)
    del live.changes[i]


def republish_a_change_altered(live: Live) -> None:
    rec = live.changes[0]
    body = orjson.loads(rec.value or b"")
    body["emitted_at"] = "2099-01-01T00:00:00.000Z"
    live.changes.append(rec._replace(offset=10**6, value=orjson.dumps(body)))


def republish_a_change_identically(live: Live) -> None:
    live.changes.append(live.changes[3]._replace(offset=10**6))


def change_a_published_tier(live: Live) -> None:
    i, body = _with_seq2(live)
    body["tier"] = "vip" if body["tier"] != "vip" else "dormant"
    live.changes[i] = live.changes[i]._replace(value=orjson.dumps(body))


def publish_out_of_order(live: Live) -> None:
    i, body = _with_seq2(live)
    user = body["user_id"]
    first = next(j for j, r in enumerate(live.changes) if _user_of(r.value or b"") == user)
    live.changes[first], live.changes[i] = live.changes[i], live.changes[first]
    live.changes = [r._replace(offset=j) for j, r in enumerate(live.changes)]


def store_a_seq_never_published(live: Live) -> None:
    user = _user_of(live.changes[0].value or b"")
    state = state_json(live.states[user])
    state["seq"] += 1
    live.states[user] = encode_state(UserState.from_json(state))


def lose_one_event(live: Live) -> None:
    user = sorted(live.states)[0]
    state = state_json(live.states[user])
    state["features"]["events"] -= 1
    live.states[user] = encode_state(UserState.from_json(state))


def lose_a_user(live: Live) -> None:
    del live.states[sorted(live.states)[0]]


def lose_a_dead_letter(live: Live) -> None:
    del live.dead[0]


def mislabel_a_dead_letter(live: Live) -> None:
    body = orjson.loads(live.dead[0].value or b"")
    body["reason"] = "invalid" if body["reason"] != "invalid" else "not_json"
    live.dead[0] = live.dead[0]._replace(value=orjson.dumps(body))


def dead_letter_a_valid_record(live: Live) -> None:
    body = orjson.loads(live.dead[0].value or b"")
    body["source_offset"] = 10**6
    live.dead.append(live.dead[0]._replace(offset=10**6, value=orjson.dumps(body)))


def crash(live: Live) -> None:
    live.crashes.append(Exit("a", 1, 1, False, 0.0, ["Traceback", "CommitFailedError: boom"]))


def fail_to_stop(live: Live) -> None:
    live.stops["b"] = None


BREAKS: list[tuple[Callable[[Live], None], list[str]]] = [
    (
        drop_a_change,
        [
            "every tier change of the clean run is on the output topic",
            "per user and lifetime, seq gap-free: published seqs are 1..n",
        ],
    ),
    (republish_a_change_altered, ["duplicate tier changes byte-identical"]),
    (change_a_published_tier, ["published tier changes equal the clean run's (but emitted_at)"]),
    (publish_out_of_order, ["per user, first occurrences of tier changes in seq order"]),
    (
        store_a_seq_never_published,
        [
            "final Redis user states byte-equal to the clean run",
            "per user and lifetime, seq gap-free: published seqs are 1..n",
        ],
    ),
    (lose_one_event, ["final Redis user states byte-equal to the clean run"]),
    (
        lose_a_user,
        [
            "final Redis user states byte-equal to the clean run",
            "per user and lifetime, seq gap-free: published seqs are 1..n",
        ],
    ),
    (lose_a_dead_letter, ["every bad record is in the DLQ"]),
    (mislabel_a_dead_letter, ["every dead letter has the reason of its defect"]),
    (dead_letter_a_valid_record, ["no valid record is dead-lettered"]),
    (crash, ["no instance crashed; each stopped cleanly on SIGTERM"]),
    (fail_to_stop, ["no instance crashed; each stopped cleanly on SIGTERM"]),
]


@pytest.mark.parametrize(("breaks", "fails"), BREAKS, ids=[b.__name__ for b, _ in BREAKS])
def test_each_invariant_catches_its_violation(
    live: Live, reference: inv.Reference, breaks: Callable[[Live], None], fails: list[str]
) -> None:
    breaks(live)
    assert sorted(verdict(live, reference).failed) == sorted(fails)


def test_an_identical_republish_is_no_violation(live: Live, reference: inv.Reference) -> None:
    republish_a_change_identically(live)
    v = verdict(live, reference)
    assert not v.violations, v.render()


def test_a_broken_reference_is_caught(live: Live) -> None:
    """The reference itself, computed without one valid event: the live state (which has
    it) no longer equals it: the comparison is not vacuous."""
    inputs = _inputs()
    valid = [i for i, r in enumerate(inputs) if b'"event_id"' in (r.value or b"")][-1]
    broken = _clean(inputs[:valid] + inputs[valid + 1 :])
    v = inv.Verdict()
    inv.states_equal(v, live.states, broken.store.users)
    assert v.failed == ["final Redis user states byte-equal to the clean run"]


def test_features_equal_ignores_tiers_but_not_features(
    live: Live, reference: inv.Reference
) -> None:
    user = sorted(live.states)[0]
    state = state_json(live.states[user])
    state["tier"], state["seq"] = "vip", 99  # learning on: another tier history is fine
    live.states[user] = encode_state(UserState.from_json(state))
    v = inv.Verdict()
    inv.features_equal(v, live.states, reference.store.users)
    assert not v.violations
    state["features"]["events"] += 1
    live.states[user] = encode_state(UserState.from_json(state))
    inv.features_equal(v, live.states, reference.store.users)
    assert v.failed == ["features and event counts equal to the clean run"]


def test_offsets_done_catches_lag_uncommitted_and_outbox() -> None:
    end = {0: 10, 1: 5}
    ok = inv.Verdict()
    inv.offsets_done(ok, end, {0: 9, 1: 4}, {0: 0, 1: 0}, {0: 10, 1: 5})
    assert not ok.violations
    for applied, outbox, committed in (
        ({0: 8, 1: 4}, {0: 0, 1: 0}, {0: 10, 1: 5}),
        ({0: 9, 1: 4}, {0: 0, 1: 2}, {0: 10, 1: 5}),
        ({0: 9, 1: 4}, {0: 0, 1: 0}, {0: 10, 1: 3}),
    ):
        bad = inv.Verdict()
        inv.offsets_done(bad, end, applied, outbox, committed)
        assert bad.failed == ["all input applied, committed, outboxes empty"]


def test_readiness_catches_a_lie_and_a_missed_recovery() -> None:
    outage = [(10.0, 20.0, "redis down")]
    truthful = [(t / 2, "a", 1, "not ready" if 10.5 <= t / 2 <= 21 else "ready") for t in range(60)]
    v = inv.Verdict()
    inv.readiness(v, truthful, outage, detect_s=3, recover_s=10, end=30)
    assert not v.violations, v.render()
    lying = [(t, n, s, "ready") for t, n, s, _ in truthful]
    v = inv.Verdict()
    inv.readiness(v, lying, outage, detect_s=3, recover_s=10, end=30)
    assert v.failed == ["/readyz false during each outage, true after"]
    assert "'ready' answers while down" in v.render()
    stuck = [(t, n, s, "ready" if t < 10 else "not ready") for t, n, s, _ in truthful]
    v = inv.Verdict()
    inv.readiness(v, stuck, outage, detect_s=3, recover_s=10, end=30)
    assert "not ready within 10s after the outage" in v.render()


def _erase(live: Live, user: str, kind: str = "erased") -> dict[str, object]:
    """Delete ``user``'s state and publish the change that ends the lifetime."""
    state = state_json(live.states.pop(user))
    last = max(
        (b for b in (orjson.loads(r.value or b"") for r in live.changes) if b["user_id"] == user),
        key=lambda b: int(b["seq"]),
    )
    assert last["seq"] == state["seq"]
    end = {**last, "seq": state["seq"] + 1, "event_id": f"end-{user}", "reason": {"kind": kind}}
    live.changes.append(live.changes[0]._replace(offset=10**6, value=orjson.dumps(end)))
    return end


def test_seq_lifetimes_an_erasure_ends_one_and_anything_else_is_a_lost_state(
    live: Live,
) -> None:
    """An erased lifetime (no state, its last seq an ``erased`` change) and a new one from
    seq 1 pass; a lifetime whose state vanished without an erasure is a lost state unless
    expiry is allowed; a gap in an ended lifetime fails."""
    user, other = sorted(live.states)[:2]
    end = _erase(live, user)
    again = {
        **end,
        "seq": 1,
        "event_id": f"new-{user}",
        "lifetime_start": "2030-01-01T00:00:00.000Z",
    }
    live.changes.append(live.changes[0]._replace(offset=10**6 + 1, value=orjson.dumps(again)))
    state = {**state_json(live.states[other]), "born_ms": 1_893_456_000_000, "seq": 1}
    new_lifetime = UserState.from_json(state)  # its state (2030-01-01)
    live.states[user] = encode_state(new_lifetime)
    v = inv.Verdict()
    inv.seq_gap_free(v, live.changes, live.states)
    assert not v.violations, v.render()

    _erase(live, other, kind="inactivity")  # gone, and its last change no erasure
    v = inv.Verdict()
    inv.seq_gap_free(v, live.changes, live.states)
    assert "is no erasure" in v.render()
    v = inv.Verdict()
    inv.seq_gap_free(v, live.changes, live.states, expiry=True)
    assert not v.violations, v.render()

    first = [
        i
        for i, r in enumerate(live.changes)
        if (b := orjson.loads(r.value or b""))["user_id"] == user
        and b["seq"] == 1
        and b["lifetime_start"] != again["lifetime_start"]
    ]
    del live.changes[first[0]]  # a gap in the ended lifetime
    v = inv.Verdict()
    inv.seq_gap_free(v, live.changes, live.states, expiry=True)
    assert v.failed == ["per user and lifetime, seq gap-free: published seqs are 1..n"]


def test_populations_exact_catches_a_user_counted_twice_or_left_behind(
    reference: inv.Reference,
) -> None:
    """The clean run's counts are its users' tiers; one user more in a tier, or a
    partition's count gone, fails."""
    store = reference.store
    parts = sorted(store.counts)
    counted = {tp[1]: {t: n for t, n in store.counts[tp].population.items() if n} for tp in parts}
    found: dict[int, dict[str, int]] = {tp[1]: {} for tp in parts}
    for user, raw in store.users.items():
        tiers = found[partition_of(user, 2)]
        tier = state_json(raw)["tier"]
        tiers[tier] = tiers.get(tier, 0) + 1
    v = inv.Verdict()
    inv.populations_exact(v, counted, found)
    assert not v.violations and sum(map(len, found.values())) >= 2, v.render()
    tier = next(iter(counted[0]))
    twice = {**counted, 0: {**counted[0], tier: counted[0][tier] + 1}}
    for broken in (twice, {1: counted[1]}):
        v = inv.Verdict()
        inv.populations_exact(v, broken, found)
        assert v.failed == ["per partition, the tier population counted is its users' tiers"]
