"""The batch step and commit protocol without servers (memory store, collected outputs)."""

from __future__ import annotations

import base64
from collections import defaultdict
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.service.records import InputRecord, OutputRecord
from consumer.service.state_store import MemoryStateStore
from consumer.service.tier_config import DEFAULT_TIERS_FILE, load_engine
from consumer.tools.replay import replay
from online_models.engine import TierEngine
from online_models.event import KNOWN_EVENT_TYPES
from online_models.features import DAY_MS
from online_models.global_model import GlobalModel
from online_models.state_codec import state_json
from schemas import validator

ENGINE = load_engine(DEFAULT_TIERS_FILE)
T0 = 1_767_225_600_000

event_st = st.one_of(
    st.tuples(
        st.integers(0, 5),  # user
        st.sampled_from(KNOWN_EVENT_TYPES),
        st.integers(0, 60 * DAY_MS),
        st.floats(0, 2000, allow_nan=False),
        st.integers(0, 30),  # event id: small range makes redeliveries
    ),
    st.binary(max_size=20),  # garbage
)


def _order(o: OutputRecord) -> tuple[str, bytes, bytes]:
    return (o.topic, o.key or b"", o.value)


def to_records(items: list[object], partitions: int = 2) -> list[InputRecord]:
    records = []
    next_offset: dict[int, int] = defaultdict(int)
    for item in items:
        if isinstance(item, bytes):
            key, value, part = None, item, 0
        else:
            user, etype, dt, amount, eid = item  # type: ignore[misc]
            body: dict[str, object] = {
                "event_id": f"e{user}-{eid}",
                "user_id": f"u{user}",
                "event_type": etype,
                "timestamp": T0 + dt,
            }
            if etype in ("purchase", "refund"):
                body["amount"] = amount
            key, value, part = f"u{user}".encode(), orjson.dumps(body), user % partitions
        records.append(InputRecord("in", part, next_offset[part], None, key, value))
        next_offset[part] += 1
    return records


@settings(max_examples=60, deadline=None)
@given(st.lists(event_st, min_size=1, max_size=80), st.integers(1, 25))
def test_outputs_do_not_depend_on_batching(items: list[object], batch: int) -> None:
    records = to_records(items)
    one, store_one = replay(records, ENGINE, batch_size=len(records))
    many, store_many = replay(records, ENGINE, batch_size=batch)
    # Order holds per key (per user); across partitions there is none to keep.
    assert sorted(one, key=_order) == sorted(many, key=_order)
    for key in {o.key for o in one}:
        assert [o for o in one if o.key == key] == [o for o in many if o.key == key]
    assert store_one.users == store_many.users


@settings(max_examples=40, deadline=None)
@given(st.lists(event_st, min_size=1, max_size=80))
def test_changes_are_valid_and_in_sequence(items: list[object]) -> None:
    outputs, _ = replay(to_records(items), ENGINE, batch_size=7)
    check = validator("tier-change.v4")
    seqs: dict[str, list[int]] = defaultdict(list)
    for out in outputs:
        if out.topic == "user-tier-changes":
            change = orjson.loads(out.value)
            check.validate(change)
            assert out.key == change["user_id"].encode()
            seqs[change["user_id"]].append(change["seq"])
    for seq in seqs.values():
        assert seq == list(range(1, len(seq) + 1))


def test_replaying_applied_offsets_changes_nothing() -> None:
    records = to_records([(1, "purchase", 0, 500.0, 1), (2, "login", 10, 0.0, 1), b"junk"])
    first, store = replay(records, ENGINE)
    before = dict(store.users)
    again, store = replay(records, ENGINE, store=store)
    assert first and again == []
    assert store.users == before


def test_redelivered_events_are_applied_once() -> None:
    records = to_records([(1, "purchase", 0, 100.0, 7), (1, "purchase", 0, 100.0, 7)], partitions=1)
    _, store = replay(records, ENGINE)
    state = state_json(store.users["u1"])
    assert state["features"]["purchases"] == 1
    assert state["features"]["total_spend"] == 100.0


def test_states_saved_as_json_by_the_earlier_version_carry_on_as_if_never_stopped() -> None:
    """A rolling upgrade: states the earlier version wrote (JSON, the dedup window as
    event ids) are read by this one, a redelivery from before the upgrade is still
    dropped, and the outputs and states are those of a run that never changed version."""
    items: list[object] = [
        (u, "purchase", 10 * u + i, 5.0 + i, i) for u in range(4) for i in range(3)
    ]
    first, second = to_records(items[:8]), to_records(items)[8:]
    redelivered = [r._replace(offset=r.offset + 100) for r in to_records(items[:8])]
    later = second + redelivered
    _, straight = replay(first, ENGINE)
    want, straight = replay(later, ENGINE, store=straight)

    applied: dict[str, list[str]] = defaultdict(list)
    for u, *_, i in items[:8]:  # type: ignore[misc]
        applied[f"u{u}"].append(f"e{u}-{i}")
    _, upgraded = replay(first, ENGINE)
    for user, raw in upgraded.users.items():
        old = state_json(raw)
        del old["recent_digests"]
        old["recent_ids"] = applied[user]
        upgraded.users[user] = orjson.dumps(old)
    got, upgraded = replay(later, ENGINE, store=upgraded)
    assert got == want
    assert upgraded.users == straight.users  # every state rewritten in the binary form
    assert all(not raw.startswith(b"{") for raw in upgraded.users.values())


def test_dead_letters_keep_the_original_bytes() -> None:
    raw = b"\x00not json\xff"
    records = [InputRecord("in", 3, 41, 123, b"k", raw)]
    outputs, store = replay(records, ENGINE, dlq_topic="dlq")
    assert len(outputs) == 1 and outputs[0].topic == "dlq" and outputs[0].key == b"k"
    body = orjson.loads(outputs[0].value)
    validator("dlq-record.v2").validate(body)
    assert base64.b64decode(body["value_b64"]) == raw
    assert (body["source_partition"], body["source_offset"], body["reason"]) == (
        3,
        41,
        "bad_encoding",
    )
    assert store.applied == {("in", 3): 41}


def test_outbox_frames_round_trip_dead_letters() -> None:
    outputs, _ = replay([InputRecord("in", 0, 0, None, None, b"{")], ENGINE)
    assert [OutputRecord.from_frame(o.to_frame()) for o in outputs] == outputs


def _generated(partitions: int, seed: int) -> list[InputRecord]:
    from consumer.demo.synthetic import GeneratorConfig, generate

    config = GeneratorConfig(users=60, events=4000, seed=seed, days=90, bad_fraction=0.01)
    offsets = [0] * partitions
    records = []
    for r in generate(config):
        p = int.from_bytes((r.key or b"\0")[-2:], "big") % partitions
        records.append(InputRecord("in", p, offsets[p], None, r.key, r.value))
        offsets[p] += 1
    return records


def _interleaved(records: list[InputRecord], chunk: int) -> list[InputRecord]:
    """Another read order: whole chunks of one partition at a time (order kept per
    partition), as a consumer's poll batches might deliver them."""
    by_part: dict[int, list[InputRecord]] = defaultdict(list)
    for r in records:
        by_part[r.partition].append(r)
    out = []
    while any(by_part.values()):
        for p in sorted(by_part):
            out.extend(by_part[p][:chunk])
            del by_part[p][:chunk]
    return out


@pytest.mark.parametrize("batch", [1, 37, 500])
def test_frozen_models_give_the_same_tiers_whatever_the_cut_and_interleaving(
    batch: int, trained_model: GlobalModel
) -> None:
    records = _generated(3, seed=21)

    def frozen() -> TierEngine:
        return load_engine(DEFAULT_TIERS_FILE, model=trained_model, frozen=True)

    ref, ref_store = replay(records, frozen(), batch_size=10**6)
    got, store = replay(_interleaved(records, 50), frozen(), batch_size=batch)
    segments = {
        orjson.loads(o.value or b"")["scores"]["segment"]
        for o in ref
        if o.topic != "user-events-dlq"
    }
    assert len(segments) > 1, "the frozen model should tell users apart"
    assert sorted(ref, key=_order) == sorted(got, key=_order)
    for key in {o.key for o in ref}:
        assert [o for o in ref if o.key == key] == [o for o in got if o.key == key]
    assert ref_store.users == store.users


@pytest.mark.parametrize("batch", [1, 37, 500])
def test_learning_is_the_same_whatever_the_cut(batch: int, quick_models: Path) -> None:
    records = _generated(1, seed=22)
    ref, ref_store = replay(records, load_engine(quick_models), batch_size=10**6)
    got, store = replay(records, load_engine(quick_models), batch_size=batch)
    assert orjson.loads(ref_store.model or b"{}")["version"] >= 2
    assert ref_store.model is not None, "the stream should advance the model"
    assert (ref, ref_store.users, ref_store.model) == (got, store.users, store.model)
    assert ref_store.contributions == store.contributions


_REPLAY_DIGEST = """
import hashlib, sys
from pathlib import Path
from consumer.tools.replay import replay
from consumer.service.tier_config import load_engine
from tests.unit.test_batch import _generated
out, store = replay(_generated(1, seed=23), load_engine(Path(sys.argv[1])), batch_size=100)
body = b"".join(o.value for o in out) + (store.model or b"")
print(hashlib.sha256(body).hexdigest(), (store.model or b"")[:60])
"""


def test_learning_is_the_same_in_another_process(quick_models: Path) -> None:
    """String hashing is randomised per process: nothing may depend on set order."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    digests = set()
    for seed in ("1", "2", "3"):
        result = subprocess.run(
            [sys.executable, "-c", _REPLAY_DIGEST, str(quick_models)],
            env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(repo)},
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        digests.add(result.stdout)
    assert len(digests) == 1, digests
    assert "version" in digests.pop()


@pytest.mark.parametrize("max_timers", [1, 3, 40])
def test_timers_loaded_in_slices_change_nothing(max_timers: int, quick_models: Path) -> None:
    """The store loads at most ``max_timers`` due timers per partition and batch; a batch
    whose event time needs more stops and goes on with the next slice. On one partition,
    with the models learning, outputs, states and the model are those of an unbounded
    load (across partitions the learning would interleave otherwise, as with any cut)."""
    records = _generated(1, seed=23)
    ref, ref_store = replay(records, load_engine(quick_models), batch_size=500)
    small = _CountingStore(max_timers=max_timers)
    got, store = replay(records, load_engine(quick_models), batch_size=500, store=small)
    assert small.rounds > -(-len(records) // 500), "no batch was ever cut: the test is void"
    assert got == ref
    assert store.users == ref_store.users
    assert store.model == ref_store.model


class _CountingStore(MemoryStateStore):
    """Counts the load-apply-save rounds (a cut batch takes more than one)."""

    rounds = 0

    def begin(self, partitions):  # type: ignore[no-untyped-def]
        self.rounds += 1
        return super().begin(partitions)


@pytest.mark.parametrize("max_timers", [1, 7])
def test_timers_loaded_in_slices_on_several_partitions(
    max_timers: int, trained_model: GlobalModel
) -> None:
    records = _generated(3, seed=25)
    frozen = load_engine(DEFAULT_TIERS_FILE, model=trained_model, frozen=True)
    ref, ref_store = replay(records, frozen, batch_size=700)
    small = MemoryStateStore(max_timers=max_timers)
    frozen = load_engine(DEFAULT_TIERS_FILE, model=trained_model, frozen=True)
    got, store = replay(records, frozen, batch_size=700, store=small)
    for key in {o.key for o in ref}:
        assert [o for o in ref if o.key == key] == [o for o in got if o.key == key]
    assert store.users == ref_store.users


def test_a_watermark_advance_goes_through_every_slice() -> None:
    """The end of a replay with --until moves event time with no record: the advance,
    too, goes on slice after slice until every due timer fired."""
    from consumer.tools.replay import Replay

    records = _generated(1, seed=24)
    until = T0 + 400 * DAY_MS
    a = Replay(load_engine(DEFAULT_TIERS_FILE, frozen=True), emit=lambda _: None)
    a.run(records, until_ms=until)
    small = MemoryStateStore(max_timers=2)
    b = Replay(load_engine(DEFAULT_TIERS_FILE, frozen=True), small, emit=lambda _: None)
    b.run(records, until_ms=until)
    assert isinstance(a.store, MemoryStateStore)
    assert small.users == a.store.users and small.timers == a.store.timers


def test_the_dedup_window_holds_the_users_last_burst() -> None:
    """A user remembers the ids of their current burst of events (each within
    DEDUP_GAP_MS of the one before), at most DEDUP_WINDOW of them, so a producer's
    retry seconds later is dropped; a user active now and then does not carry the ids
    of their last 64 events in every stored state."""
    from online_models.user_state import DEDUP_GAP_MS, DEDUP_WINDOW, UserState

    minute = 60_000
    # a week of daily bursts of 5 events a minute apart, then a burst of 90 events
    items: list[object] = [
        (1, "page_view", day * DAY_MS + i * minute, 0.0, 10 * day + i)
        for day in range(7)
        for i in range(5)
    ]
    burst = [(1, "page_view", 8 * DAY_MS + i * 1_000, 0.0, 100 + i) for i in range(90)]
    items += burst
    retry = [burst[-60], burst[-1]]  # the producer resent two of them, a second later
    records = to_records(items + retry, partitions=1)
    records = [r._replace(offset=i) for i, r in enumerate(records)]
    _, store = replay(records, ENGINE)
    state = UserState.from_json(state_json(store.users["u1"]))
    assert state.features.events == 7 * 5 + 90  # the retries were dropped
    assert len(state.recent_ids) == DEDUP_WINDOW  # the burst's newest 64 ids
    # the next day's first event starts a new window: one id, not 64
    later = to_records([*items, (1, "page_view", 9 * DAY_MS, 0.0, 999)], partitions=1)
    _, store = replay(later, ENGINE)
    assert len(UserState.from_json(state_json(store.users["u1"])).recent_ids) == 1
    assert 9 * DAY_MS - (8 * DAY_MS + 89 * 1_000) > DEDUP_GAP_MS
