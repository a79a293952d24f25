"""The current-tier topic and the headers (issue 10): a new subscriber that reads only
the compacted `user-tiers` topic knows every user's current tier, equal to what
`tierstream snapshot` reads from Redis; a forgotten user's key ends in a tombstone; every
record the service publishes says its schema in its headers."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from consumer.demo.synthetic import GeneratorConfig, generate
from consumer.service.kafka_io import ensure_topics, produce_records
from consumer.service.partitioning import key_partition
from schemas import validator
from tests.integration.support import KAFKA, Names, cli, read_topic, read_topic_with_headers

pytestmark = pytest.mark.integration

CONFIG = GeneratorConfig(users=150, events=4000, seed=71, days=45, bad_fraction=0.01)


def _current(names: Names) -> dict[str, dict[str, object] | None]:
    """What a compacted read of the current-tier topic leaves: the last value per key."""
    last: dict[str, dict[str, object] | None] = {}
    for rec in sorted(read_topic(names.tiers), key=lambda r: (r.partition, r.offset)):
        assert rec.key is not None
        last[rec.key.decode()] = orjson.loads(rec.value) if rec.value is not None else None
    return last


def test_the_current_tier_topic_alone_gives_everyones_tier(names: Names, tmp_path: Path) -> None:
    env = names.env(TIERSTREAM_FREEZE_MODEL="1")
    produce_records(KAFKA, names.input, [(r.key, r.value) for r in generate(CONFIG)], partitions=2)
    assert cli("run", "--stop-when-idle", "2", env=env).returncode == 0

    snap = cli("snapshot", "--out", str(tmp_path / "snapshot.jsonl"), env=env)
    assert snap.returncode == 0, snap.stderr
    lines = [orjson.loads(x) for x in (tmp_path / "snapshot.jsonl").read_bytes().splitlines()]
    expected = {x["user_id"]: x["tier"] for x in lines}
    current = _current(names)
    assert len(expected) > 100
    assert {u: v and v["tier"] for u, v in current.items()} == expected
    check = validator("user-tier.v1")
    for value in current.values():
        assert value is not None
        check.validate(value)

    # the change each record names is on the change topic, with the same tier
    changes = {
        c["event_id"]: c for c in (orjson.loads(r.value or b"") for r in read_topic(names.output))
    }
    for user, value in current.items():
        assert value is not None
        change = changes[str(value["last_event_id"])]
        assert (change["user_id"], change["tier"], change["seq"]) == (
            user,
            value["tier"],
            value["seq"],
        )

    gone = sorted(expected)[3]
    assert cli("forget", gone, env=env).returncode == 0
    assert cli("run", "--stop-when-idle", "2", env=env).returncode == 0
    after = _current(names)
    assert after[gone] is None
    assert {u: v for u, v in after.items() if u != gone} == {
        u: v for u, v in current.items() if u != gone
    }


def test_every_output_carries_its_schema_in_headers(names: Names) -> None:
    records = [(r.key, r.value) for r in generate(CONFIG)][:600]
    produce_records(KAFKA, names.input, records, partitions=1)
    assert cli("run", "--stop-when-idle", "2", env=names.env()).returncode == 0
    expected = {
        names.output: b"tier-change.v4",
        names.tiers: b"user-tier.v1",
        names.dlq: b"dlq-record.v2",
    }
    for topic, schema in expected.items():
        recs = read_topic_with_headers(topic)
        assert recs, f"nothing on {topic}"
        for _, pairs in recs:
            headers = dict(pairs)
            assert headers["content-type"] == b"application/json", topic
            assert headers["tierstream-schema"] == schema, topic


def test_every_output_is_on_the_partition_kafkas_partitioner_gives_its_key(names: Names) -> None:
    """The publisher chooses each record's partition itself (once per key and batch): it
    must be the one Kafka's default partitioner would, whatever the output topics' counts."""
    records = [(r.key, r.value) for r in generate(CONFIG)]
    produce_records(KAFKA, names.input, records, partitions=2)
    counts = {names.output: 5, names.tiers: 3}
    for topic, count in counts.items():
        ensure_topics(KAFKA, [topic], partitions=count)
    assert cli("run", "--stop-when-idle", "2", env=names.env()).returncode == 0
    for topic, count in counts.items():
        recs = read_topic(topic)
        assert len(recs) > 50, topic
        used = set()
        for rec in recs:
            assert rec.key is not None
            assert rec.partition == key_partition(rec.key, count), (topic, rec.key)
            used.add(rec.partition)
        assert used == set(range(count)), topic
