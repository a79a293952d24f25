"""Ownership of partitions against the real Redis and Kafka (issue 8, items 5, 7 and 9):
a stalled owner (zombie) cannot drop or reorder the new owner's outbox, a state store
that went back in time is read again from its applied offsets, a lost state is refused
(or rebuilt, when told), and a catch-up run after a crash ends only when the whole group
has consumed every partition."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import redis

from consumer.demo.synthetic import GeneratorConfig, generate
from consumer.service.checkpoint import Checkpoint
from consumer.service.errors import Fenced
from consumer.service.kafka_io import produce_records
from consumer.service.keys import KeySpace
from consumer.service.records import InputRecord, OutputRecord
from consumer.service.redis_store import RedisStateStore
from consumer.service.tier_config import DEFAULT_TIERS_FILE, load_engine
from consumer.tools.replay import LocalOffsets, ReplaySink, replay
from online_models.global_model import GlobalModel
from tests.batch_step import frozen_step
from tests.integration.support import (
    KAFKA,
    REDIS,
    REPO,
    Names,
    cli,
    committed_offsets,
    end_offsets,
    read_topic,
    stored_users,
    wait_for_group,
)

pytestmark = pytest.mark.integration

T0 = 1_767_225_600_000


def _event(user: str, n: int) -> InputRecord:
    body = orjson.dumps(
        {"event_id": f"{user}-{n}", "user_id": user, "event_type": "purchase",
         "timestamp": T0 + n * 60_000, "amount": 10.0 + n}
    )  # fmt: skip
    return InputRecord("in", 0, n, None, user.encode(), body)


class Instance:
    """One instance's store handle and commit protocol on a shared Redis prefix, with
    its outputs collected in publish order."""

    def __init__(self, prefix: str, name: str, published: list[tuple[str, OutputRecord]]):
        self.name = name
        self.store = RedisStateStore(REDIS, prefix=prefix)
        self.hook: list[object] = []

        def emit(rec: OutputRecord) -> None:
            published.append((name, rec))

        self.checkpoint = Checkpoint(
            frozen_step(),
            self.store,
            LocalOffsets(),
            ReplaySink(emit),
            clock_ms=lambda: None,
            timer=lambda: 0.0,
            on_step=self._on_step,
        )

    def _on_step(self, name: str) -> None:
        for hook in list(self.hook):
            hook(name)  # type: ignore[operator]


def test_a_zombie_neither_drops_nor_reorders_the_new_owners_outbox(names: Names) -> None:
    """A saves and publishes batch 1, then stalls before it clears its outbox; B takes the
    partition over (republishing A's outputs) and saves batch 2, then stalls before
    publishing it. When A wakes, its trim of the outbox must be refused: the trim counted
    A's entries, and would now drop B's unpublished ones."""
    published: list[tuple[str, OutputRecord]] = []
    a = Instance(names.prefix, "A", published)
    b = Instance(names.prefix, "B", published)
    tp = ("in", 0)
    a.checkpoint.recover([tp])
    batch1 = [_event(f"u{i}", i) for i in range(5)]
    batch2 = [_event(f"v{i}", 5 + i) for i in range(5)]

    def b_takes_over(step: str) -> None:
        if step == "commit":  # A published, committed, and stalls before clearing
            a.hook.clear()
            b.checkpoint.recover([tp])
            b.hook.append(b_stalls)
            with pytest.raises(_Stall):
                b.checkpoint.run_batch(batch2)

    def b_stalls(step: str) -> None:
        if step == "save":
            raise _Stall

    a.hook.append(b_takes_over)
    with pytest.raises(Fenced):
        a.checkpoint.run_batch(batch1)  # A wakes: its clear is fenced
    b.hook.clear()
    b.checkpoint.recover([tp])  # B wakes, acquires again, publishes its outbox
    keys = KeySpace(names.prefix)
    r = redis.Redis.from_url(REDIS)
    assert r.llen(keys.outbox(*tp)) == 0
    r.close()
    changes = [(who, orjson.loads(o.value)) for who, o in published if o.topic == "changes"]
    users = {c["user_id"] for _, c in changes}
    assert users == {f"u{i}" for i in range(5)} | {f"v{i}" for i in range(5)}, users
    # nothing A published came after anything of B's
    first_b = next(i for i, (who, _) in enumerate(changes) if who == "B")
    assert all(who == "B" for who, _ in changes[first_b:])


class _Stall(Exception):
    """An instance stops here, as if paused."""


CONFIG = GeneratorConfig(users=120, events=3000, seed=41, days=40)


def _produce(topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    produce_records(KAFKA, topic, records, partitions=2)


def _stored_users(prefix: str, users: list[str]) -> dict[str, bytes | None]:
    return stored_users(prefix, users)


def _reference(names: Names, model: GlobalModel) -> dict[str, bytes]:
    inputs = sorted(read_topic(names.input), key=lambda r: (r.partition, r.offset))
    _, store = replay(inputs, load_engine(DEFAULT_TIERS_FILE, model=model, frozen=True))
    return store.users


def _snapshot(prefix: str) -> dict[bytes, bytes]:
    r = redis.Redis.from_url(REDIS)
    try:
        return {k: r.dump(k) for k in r.scan_iter(match=f"{prefix}:*", count=1000)}
    finally:
        r.close()


def _restore(prefix: str, dumped: dict[bytes, bytes]) -> None:
    """Put the prefix's keys back as they were in ``dumped`` (what a restore from an old
    backup, or a failover to a lagging replica, does to them)."""
    r = redis.Redis.from_url(REDIS)
    try:
        for k in r.scan_iter(match=f"{prefix}:*", count=1000):
            r.delete(k)
        for k, v in dumped.items():
            r.restore(k, 0, v)
    finally:
        r.close()


def test_a_store_restored_from_an_old_backup_is_read_again_from_its_offsets(
    names: Names, trained_model: GlobalModel, trained_model_file: Path
) -> None:
    env = names.env(TIERSTREAM_MODEL_FILE=str(trained_model_file))
    records = [(r.key, r.value) for r in generate(CONFIG)]
    half = len(records) // 2
    _produce(names.input, records[:half])
    assert cli("run", "--stop-when-idle", "2", env=env).returncode == 0
    backup = _snapshot(names.prefix)
    _produce(names.input, records[half:])
    assert cli("run", "--stop-when-idle", "2", env=env).returncode == 0
    _restore(names.prefix, backup)  # Redis loses the second half; Kafka has committed it
    rerun = cli("run", "--stop-when-idle", "2", env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert "resumes at offset" in rerun.stderr
    expected = _reference(names, trained_model)
    assert _stored_users(names.prefix, sorted(expected)) == expected


def test_a_lost_state_is_refused_and_rebuilt_when_told(
    names: Names, trained_model: GlobalModel, trained_model_file: Path
) -> None:
    env = names.env(TIERSTREAM_MODEL_FILE=str(trained_model_file))
    _produce(names.input, [(r.key, r.value) for r in generate(CONFIG)])
    assert cli("run", "--stop-when-idle", "2", env=env).returncode == 0
    _restore(names.prefix, {})  # everything under the prefix is gone
    refused = cli("run", "--stop-when-idle", "2", env=env)
    assert refused.returncode == 2, refused.stderr
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("tierstream: error: the state store holds nothing for"), last
    assert "TIERSTREAM_ON_STATE_LOSS=rebuild" in last
    rebuilt = cli(
        "run", "--stop-when-idle", "2", env={**env, "TIERSTREAM_ON_STATE_LOSS": "rebuild"}
    )
    assert rebuilt.returncode == 0, rebuilt.stderr
    expected = _reference(names, trained_model)
    assert _stored_users(names.prefix, sorted(expected)) == expected


def test_a_catch_up_run_ends_only_when_the_group_is_done(names: Names) -> None:
    """A member that stalls (here: SIGSTOP; a killed one is the same until its session
    expires) keeps its partitions for a while. A catch-up run in the same group that has
    finished its own partitions must wait for the group to finish them all, not stop
    "idle" with records left."""
    config = GeneratorConfig(users=300, events=20_000, seed=42)
    records = [(r.key, r.value) for r in generate(config)]
    produce_records(KAFKA, names.input, records, partitions=4)
    env = names.env(TIERSTREAM_MAX_POLL_RECORDS="100", TIERSTREAM_FREEZE_MODEL="1")
    # The member reads 5 records a poll: still busy with its partitions when the group has
    # formed and it is stopped (at 100 a poll it could read all 20,000 before the catch-up
    # run joined, which then found the group done: it stopped, and never was a member).
    member = subprocess.Popen(
        [sys.executable, "-m", "consumer.cli", "run"],
        env={**env, "TIERSTREAM_INSTANCE_ID": "member", "TIERSTREAM_MAX_POLL_RECORDS": "5"},
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    catch_up = subprocess.Popen(
        [sys.executable, "-m", "consumer.cli", "run", "--stop-when-idle", "2"],
        env={**env, "TIERSTREAM_INSTANCE_ID": "catch-up"},
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    err = None
    try:
        wait_for_group(names.group, 2)
        member.send_signal(signal.SIGSTOP)  # it holds two partitions, not done with them
        _, err = catch_up.communicate(timeout=180)
    finally:
        member.kill()
        member.communicate()
        if catch_up.poll() is None:
            catch_up.kill()
        if err is None:  # its stderr read and closed whatever happened
            catch_up.communicate()
    assert catch_up.returncode == 0, err
    assert re.search(r"caught up: every partition of \S+ consumed to its end", err), err
    assert committed_offsets(names.group, names.input) == end_offsets(names.input)
