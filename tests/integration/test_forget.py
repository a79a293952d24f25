"""`tierstream forget` against the running service, Kafka and Redis (issue 8, forget):
afterwards no key mentions the user, the tombstone and the `erased` change are on their
topics, events of the user still waiting in the input did not bring them back, and a
later event starts a fresh lifetime."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import redis
from kafka import KafkaProducer
from kafka import errors as KafkaErrors
from kafka.future import Future

from consumer.demo.synthetic import GeneratorConfig, generate
from consumer.service.errors import NotAcknowledged
from consumer.service.kafka_io import produce_records
from consumer.service.keys import KeySpace
from consumer.service.partitioning import partition_of
from consumer.tools.dlq_purge import purge
from tests.integration.support import KAFKA, REDIS, Names, cli, read_topic

pytestmark = pytest.mark.integration

CONFIG = GeneratorConfig(users=80, events=2500, seed=51, days=30)


def _keys_mentioning(prefix: str, user: str) -> list[str]:
    """Every key under ``prefix`` whose name or content names ``user``."""
    r = redis.Redis.from_url(REDIS)
    needle = user.encode()
    found = []
    try:
        for key in r.scan_iter(match=f"{prefix}:*", count=1000):
            kind = r.type(key)
            if kind == b"string":
                values = [r.get(key) or b""]
            elif kind == b"list":
                values = r.lrange(key, 0, -1)
            elif kind == b"zset":
                values = r.zrange(key, 0, -1)
            elif kind == b"set":
                values = list(r.smembers(key))
            else:
                values = [repr(r.dump(key)).encode()]
            if needle in key or any(needle in v for v in values):
                found.append(key.decode())
    finally:
        r.close()
    return found


def _later_event(user: str, n: int, day: int) -> tuple[bytes, bytes]:
    body = {
        "event_id": f"late-{user}-{n}",
        "user_id": user,
        "event_type": "purchase",
        "timestamp": f"2026-02-{day:02d}T12:00:00Z",
        "amount": 50.0,
    }
    return user.encode(), orjson.dumps(body)


def test_forget_erases_a_user_and_a_later_event_starts_afresh(names: Names) -> None:
    env = names.env(TIERSTREAM_FREEZE_MODEL="1")
    produce_records(KAFKA, names.input, [(r.key, r.value) for r in generate(CONFIG)], partitions=2)
    assert cli("run", "--stop-when-idle", "2", env=env).returncode == 0
    user = "u000007"
    assert _keys_mentioning(names.prefix, user), "the user should have a state to erase"

    # events of the user still unread when the request is sent: applied, then erased
    produce_records(KAFKA, names.input, [_later_event(user, i, 3 + i) for i in range(3)])
    sent = cli("forget", user, "--request-id", "gdpr-42", env=env)
    assert sent.returncode == 0, sent.stderr
    run = cli("run", "--stop-when-idle", "2", env=env)
    assert run.returncode == 0, run.stderr
    assert _keys_mentioning(names.prefix, user) == []

    tiers = [r for r in read_topic(names.tiers) if r.key == user.encode()]
    assert tiers and tiers[-1].value is None  # the tombstone, after the user's current tiers
    assert all(r.value is not None for r in tiers[:-1])
    changes = [orjson.loads(r.value or b"") for r in read_topic(names.output)]
    mine = [c for c in changes if c["user_id"] == user]
    erased = [c for c in mine if c["reason"]["kind"] == "erased"]
    assert len(erased) == 1 and erased[0]["reason"]["request_id"] == "gdpr-42"
    assert erased[0]["tier"] is None and erased[0]["seq"] == max(c["seq"] for c in mine)

    # a later event: a new lifetime, seq from 1, ids never seen before
    produce_records(KAFKA, names.input, [_later_event(user, 9, 20)])
    assert cli("run", "--stop-when-idle", "2", env=env).returncode == 0
    fresh = [
        c
        for c in (orjson.loads(r.value or b"") for r in read_topic(names.output))
        if c["user_id"] == user and c not in mine
    ]
    assert fresh and fresh[0]["seq"] == 1
    assert fresh[0]["lifetime_start"] == "2026-02-20T12:00:00.000Z"
    assert not {c["event_id"] for c in fresh} & {c["event_id"] for c in mine}
    keys = KeySpace(names.prefix)
    home = partition_of(user, 2)
    left = set(_keys_mentioning(names.prefix, user))
    assert keys.user(names.input, home, user) in left  # the new lifetime's state, its timer
    assert left - {keys.user(names.input, home, user)} <= {keys.timers(names.input, home)}


def test_dlq_purge_removes_a_users_dead_letters_and_keeps_the_others(names: Names) -> None:
    env = names.env(TIERSTREAM_FREEZE_MODEL="1")
    bad = {"event_type": "purchase", "timestamp": "2026-02-01T12:00:00Z", "amount": 1e12}
    records = []
    for i in range(30):
        user = f"u{i % 3}"
        records.append((user.encode(), orjson.dumps({**bad, "event_id": f"b{i}", "user_id": user})))
    # keyed by someone else, but the user's own record all the same
    records.append((b"u9", orjson.dumps({**bad, "event_id": "x", "user_id": "u1", "amount": 5})))
    produce_records(KAFKA, names.input, records, partitions=2)
    assert cli("run", "--stop-when-idle", "2", env=env).returncode == 0
    assert len(read_topic(names.dlq)) == 31
    dry = cli("dlq", "purge", "u1", "--dry-run", env=env)
    assert dry.returncode == 0 and "would remove 11 records" in dry.stderr, dry.stderr
    assert len(read_topic(names.dlq)) == 31
    done = cli("dlq", "purge", "u1", env=env)
    assert done.returncode == 0 and "removed 11 records" in done.stderr, done.stderr
    left = read_topic(names.dlq)
    assert len(left) == 20 and all(r.key in (b"u0", b"u2") for r in left)


def test_a_dlq_purge_whose_copies_are_not_acknowledged_deletes_nothing(
    names: Names, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The purge copies the records it keeps forward, then deletes the partition up to its
    old end: a copy the brokers refuse or never acknowledge must stop it before the
    delete, or the dead letters it meant to keep are gone."""
    bad = {"event_type": "purchase", "timestamp": "2026-02-01T12:00:00Z", "amount": -1}
    records = [
        (u.encode(), orjson.dumps({**bad, "event_id": f"b{i}", "user_id": u}))
        for i, u in enumerate(["u0", "u1", "u2"] * 4)
    ]
    produce_records(KAFKA, names.dlq, records, partitions=1)

    def refused(self: KafkaProducer, *args: Any, **kwargs: Any) -> Future:
        return Future().failure(KafkaErrors.MessageSizeTooLargeError("refused (injected)"))

    monkeypatch.setattr(KafkaProducer, "send", refused)
    with pytest.raises(NotAcknowledged, match=f"refused 8 of 8 records sent to {names.dlq}"):
        purge(KAFKA, names.dlq, {"u1"})
    assert len(read_topic(names.dlq)) == 12  # every dead letter still there
