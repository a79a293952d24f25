"""`tierstream follow`, the reference subscriber (issue 10): fed a change topic with
injected duplicates and one change removed, it reports exactly those duplicates and that
gap; bootstrapped from the current-tier topic, it knows every user's tier."""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest
from kafka import KafkaProducer

from consumer.demo.synthetic import GeneratorConfig, generate
from consumer.service.kafka_io import ensure_topics, produce_records
from tests.integration.support import KAFKA, Names, cli, read_topic

pytestmark = pytest.mark.integration

CONFIG = GeneratorConfig(users=120, events=3000, seed=81, days=60)


def _run_service(names: Names) -> None:
    produce_records(KAFKA, names.input, [(r.key, r.value) for r in generate(CONFIG)], partitions=2)
    done = cli("run", "--stop-when-idle", "2", env=names.env(TIERSTREAM_FREEZE_MODEL="1"))
    assert done.returncode == 0, done.stderr


def test_follow_reports_exactly_the_injected_duplicates_and_the_gap(names: Names) -> None:
    _run_service(names)
    changes = sorted(read_topic(names.output), key=lambda r: (r.partition, r.offset))
    bodies = [orjson.loads(r.value or b"") for r in changes]
    last_seq: dict[str, int] = {}
    for b in bodies:
        last_seq[b["user_id"]] = max(last_seq.get(b["user_id"], 0), b["seq"])
    rng = random.Random(5)
    # one change removed, with a later one of the same user (else no gap can show)
    removable = [i for i, b in enumerate(bodies) if b["seq"] < last_seq[b["user_id"]]]
    removed = rng.choice(removable)
    # five changes re-published later in their partition, as an outbox would
    copied = sorted(rng.sample([i for i in range(len(bodies)) if i != removed], 5))

    copy_topic = f"{names.output}-copy"
    ensure_topics(KAFKA, [copy_topic], partitions=2)
    producer = KafkaProducer(bootstrap_servers=KAFKA, acks="all")
    try:
        for i, rec in enumerate(changes):
            if i != removed:
                producer.send(copy_topic, key=rec.key, value=rec.value, partition=rec.partition)
        for i in copied:
            rec = changes[i]
            producer.send(copy_topic, key=rec.key, value=rec.value, partition=rec.partition)
        producer.flush()
    finally:
        producer.close()

    env = names.env(TIERSTREAM_OUTPUT_TOPIC=copy_topic)
    done = cli("follow", "--from-beginning", "--once", env=env)
    assert done.returncode == 0, done.stderr
    reports = [orjson.loads(line) for line in done.stdout.splitlines()]
    dups = sorted(r["event_id"] for r in reports if r["kind"] == "duplicate")
    assert dups == sorted(bodies[i]["event_id"] for i in copied)
    gaps = [r for r in reports if r["kind"] == "gap"]
    gone = bodies[removed]
    assert [(g["user_id"], g["missing_seq"]) for g in gaps] == [(gone["user_id"], [gone["seq"]])]
    assert len(reports) == 6


def test_follow_bootstraps_from_the_current_tier_topic(names: Names, tmp_path: Path) -> None:
    _run_service(names)
    done = cli("follow", "--once", env=names.env())
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""  # nothing duplicated, nothing missing
    snap = cli("snapshot", "--out", str(tmp_path / "s.jsonl"), env=names.env())
    assert snap.returncode == 0, snap.stderr
    tiers: dict[str, int] = {}
    for line in (tmp_path / "s.jsonl").read_bytes().splitlines():
        tier = orjson.loads(line)["tier"]
        tiers[tier] = tiers.get(tier, 0) + 1
    lines = done.stderr.strip().splitlines()
    head = max(i for i, line in enumerate(lines) if line.split() == ["tier", "users"])
    end = next(i for i in range(head, len(lines)) if lines[i].split()[0] == "all")
    table = lines[head : end + 1]  # the last table drawn (log lines may come around it)
    shown = {row.split()[0]: int(row.split()[1]) for row in table[1:-1]}
    assert shown == tiers, done.stderr
    assert table[-1].split()[1] == str(sum(tiers.values()))
