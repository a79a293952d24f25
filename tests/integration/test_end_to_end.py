"""generate -> topic -> `tierstream run` -> tier changes, DLQ and Redis state, against the
real Kafka broker and Redis server (`make stack-up`)."""

from __future__ import annotations

import base64
import math
import re
from collections import Counter, defaultdict
from pathlib import Path

import orjson
import pytest

from consumer.demo.synthetic import BAD_REASONS, GeneratorConfig, generate
from consumer.service.tier_config import DEFAULT_TIERS_FILE, load_engine
from consumer.tools.replay import replay
from online_models.global_model import GlobalModel
from online_models.state_codec import state_json
from schemas import validator
from tests.integration.support import (
    Names,
    cli,
    committed_offsets,
    end_offsets,
    read_topic,
    recompute_features,
    stored_users,
)

pytestmark = pytest.mark.integration

CONFIG = GeneratorConfig(users=300, events=30_000, seed=11, bad_fraction=0.02)
GEN_ARGS = ["--users", "300", "--events", "30000", "--seed", "11", "--bad-fraction", "0.02"]


def _without_emitted_at(value: bytes) -> dict[str, object]:
    body: dict[str, object] = orjson.loads(value)
    body.pop("emitted_at")
    return body


def test_generate_run_publishes_valid_changes_dlq_and_exact_state(
    names: Names, tmp_path: Path, trained_model: GlobalModel, trained_model_file: Path
) -> None:
    # generate: the same stream to a file and to a 3-partition topic, via the CLI
    out_file, truth_file = tmp_path / "events.jsonl", tmp_path / "truth.jsonl"
    gen = cli(
        "generate",
        *GEN_ARGS,
        "--out",
        str(out_file),
        "--truth-out",
        str(truth_file),
        env=names.env(),
    )
    assert gen.returncode == 0, gen.stderr
    gen = cli("generate", *GEN_ARGS, "--topic", names.input, "--partitions", "3", env=names.env())
    assert gen.returncode == 0, gen.stderr
    lines = out_file.read_bytes().splitlines()
    assert len(lines) == CONFIG.events
    assert len(truth_file.read_bytes().splitlines()) == CONFIG.users
    inputs = read_topic(names.input)
    assert sorted(r.value or b"" for r in inputs) == sorted(lines)

    # run until idle. Frozen model: with learning on, what a model learned depends on how
    # the three partitions interleave (single-partition parity with learning on is in
    # test_crash_recovery.py).
    env = names.env(
        TIERSTREAM_MAX_POLL_RECORDS="1500", TIERSTREAM_MODEL_FILE=str(trained_model_file)
    )
    run = cli("run", "--stop-when-idle", "5", env=env)
    assert run.returncode == 0, run.stderr
    assert f"{CONFIG.events} records" in run.stderr

    # every input offset is committed
    committed = committed_offsets(names.group, names.input)
    assert committed == end_offsets(names.input)

    # tier changes: valid, keyed by user, seq 1..n per user, and exactly what the
    # in-memory replay of the same partitions gives (the same code path, no Kafka)
    changes = read_topic(names.output)
    assert changes, "no tier change was published"
    check = validator("tier-change.v4")
    published: dict[str, list[dict[str, object]]] = defaultdict(list)
    for rec in changes:
        body = orjson.loads(rec.value or b"")
        check.validate(body)
        assert rec.key == body["user_id"].encode()
        published[body["user_id"]].append(_without_emitted_at(rec.value or b""))
    for user, seq in published.items():
        assert [c["seq"] for c in seq] == list(range(1, len(seq) + 1)), user
    reference, _ = replay(
        sorted(inputs, key=lambda r: (r.partition, r.offset)),
        load_engine(DEFAULT_TIERS_FILE, model=trained_model, frozen=True),
        output_topic=names.output,
        dlq_topic=names.dlq,
    )
    expected: dict[str, list[dict[str, object]]] = defaultdict(list)
    for out in reference:
        if out.topic == names.output:
            expected[out.key.decode()].append(_without_emitted_at(out.value))  # type: ignore[union-attr]
    assert published == expected

    # DLQ: every malformed record, with its generator-intended reason and original bytes
    bad = Counter((r.value, r.bad_reason) for r in generate(CONFIG) if r.bad_reason)
    assert {reason for _, reason in bad} == set(BAD_REASONS)
    dlq_check = validator("dlq-record.v2")
    dead = Counter()
    for rec in read_topic(names.dlq):
        body = orjson.loads(rec.value or b"")
        dlq_check.validate(body)
        assert not body["value_truncated"]
        original = base64.b64decode(body["value_b64"])
        src = next(
            r
            for r in inputs
            if (r.partition, r.offset) == (body["source_partition"], body["source_offset"])
        )
        assert src.value == original and body["source_topic"] == names.input
        dead[(original, body["reason"])] += 1
    assert dead == bad

    # Redis: every user's features equal a recomputation from the input file
    recomputed = recompute_features(inputs)
    stored = list(stored_users(names.prefix, recomputed).values())
    assert all(stored), "a user with valid events has no state in Redis"
    for (user, exp), raw in zip(recomputed.items(), stored, strict=True):
        f = state_json(raw)["features"]
        assert (f["last_ms"], f["first_ms"], f["events"], f["purchases"]) == (
            exp.last_ms,
            exp.first_ms,
            exp.events,
            exp.purchases,
        ), user
        assert math.isclose(f["total_spend"], exp.total_spend, rel_tol=1e-9, abs_tol=1e-6)
        for got, want in (
            (f["spend"], exp.spend),
            (f["refunded"], exp.refunded),
            *zip(f["counts"], exp.counts, strict=True),
        ):
            assert all(
                math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
                for a, b in zip(got, want, strict=True)
            ), (user, got, want)


def test_a_second_run_reads_nothing_new(names: Names) -> None:
    gen = cli(
        "generate", "--users", "20", "--events", "500", "--topic", names.input, env=names.env()
    )
    assert gen.returncode == 0, gen.stderr
    first = cli("run", "--stop-when-idle", "3", env=names.env())
    assert first.returncode == 0, first.stderr
    before = read_topic(names.output)
    second = cli("run", "--stop-when-idle", "3", env=names.env())
    assert second.returncode == 0, second.stderr
    read = re.search(r"tierstream: (\d+) records in (\d+) batches", second.stderr)
    assert read and read.groups() == ("0", "0"), second.stderr
    assert read_topic(names.output) == before


def test_the_record_and_dlq_copy_limits_and_the_invalid_reason_through_the_service(
    names: Names,
) -> None:
    """TIERSTREAM_MAX_RECORD_BYTES and TIERSTREAM_DLQ_MAX_COPY_BYTES as the running service
    applies them, and the catch-all reason `invalid` (a violation no other reason names)."""
    from consumer.service.kafka_io import produce_records
    from tests.integration.support import KAFKA

    good = {"event_id": "e1", "user_id": "u1", "event_type": "login", "timestamp": 1767225600000}
    padded = {**good, "event_id": "e2", "properties": {"blob": "x" * 3000}}
    invalid = {**good, "event_id": "e3", "event_type": ""}  # minLength 1: no other reason
    not_json = b"{" + b"x" * 1999
    produce_records(
        KAFKA,
        names.input,
        [
            (b"u1", orjson.dumps(good)),
            (b"u1", orjson.dumps(padded)),
            (b"u1", orjson.dumps(invalid)),
            (b"u1", not_json),
        ],
    )
    env = names.env(TIERSTREAM_MAX_RECORD_BYTES="2048", TIERSTREAM_DLQ_MAX_COPY_BYTES="1024")
    run = cli("run", "--stop-when-idle", "2", env=env)
    assert run.returncode == 0, run.stderr
    dead = {
        orjson.loads(r.value or b"")["source_offset"]: orjson.loads(r.value or b"")
        for r in read_topic(names.dlq)
    }
    assert sorted(dead) == [1, 2, 3]
    assert dead[1]["reason"] == "oversize" and "> limit 2048" in dead[1]["detail"]
    assert dead[2]["reason"] == "invalid" and "event_type" in dead[2]["detail"]
    assert dead[3]["reason"] == "not_json"
    for body in dead.values():
        copied = base64.b64decode(body["value_b64"])
        assert len(copied) == min(body["value_size"], 1024)
        assert body["value_truncated"] == (body["value_size"] > 1024)
    assert (
        dead[1]["value_truncated"] and dead[3]["value_truncated"] and dead[3]["value_size"] == 2000
    )
