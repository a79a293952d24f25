"""kill -9 between every two steps of the commit protocol, restart, and check:
state exactly once, every output at least once, duplicates byte-identical, order kept,
and the models' learning continued exactly where it stopped (one partition, learning on:
the stored model and contribution equal those of one clean in-memory pass)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import orjson
import pytest
import redis

from consumer.service.keys import KeySpace
from consumer.service.redis_store import RedisStateStore
from consumer.service.tier_config import load_engine
from consumer.tools.replay import replay
from online_models.state_codec import state_json
from tests.integration.support import (
    REDIS,
    REPO,
    Names,
    cli,
    committed_offsets,
    end_offsets,
    read_topic,
    stored_users,
)

pytestmark = pytest.mark.integration

STEPS = ["load", "apply", "save", "publish", "commit", "clear"]


def _generate(env: dict[str, str], names: Names) -> None:
    gen = cli(
        "generate",
        "--users",
        "150",
        "--events",
        "3000",
        "--seed",
        "5",
        "--days",
        "60",
        "--bad-fraction",
        "0.03",
        "--topic",
        names.input,
        "--partitions",
        "1",
        env=env,
    )
    assert gen.returncode == 0, gen.stderr


def _crash_and_rerun(env: dict[str, str], step: str) -> subprocess.CompletedProcess[str]:
    crashed = subprocess.run(
        [sys.executable, "-m", "tests.integration.crashing_service", step, "3"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert crashed.returncode == -9, crashed.stderr
    rerun = cli("run", "--stop-when-idle", "4", env=env)
    assert rerun.returncode == 0, rerun.stderr
    return rerun


#: (step, commit interval in ms): every step with a commit per batch, where the group's
#: offset after each step is known (a batch is settled, its offsets committed, by the
#: next one after that one's save: killed anywhere in batch N, the group has batch N-2's
#: offsets or N-1's, the store N-1's or N's); and the default interval (1 s: the group's
#: offset trails what was applied) killed after the steps around the commit.
CASES = [(step, 0) for step in STEPS] + [("save", 1000), ("commit", 1000), ("clear", 1000)]


@pytest.mark.slow  # nine kills and restarts: make test-slow
@pytest.mark.parametrize(("step", "commit_interval_ms"), CASES)
def test_kill_after_each_step_loses_and_doubles_nothing(
    names: Names, step: str, commit_interval_ms: int, quick_models: Path
) -> None:
    env = names.env(
        TIERSTREAM_MAX_POLL_RECORDS="150",
        TIERSTREAM_TIERS_FILE=str(quick_models),
        TIERSTREAM_COMMIT_INTERVAL_MS=str(commit_interval_ms),
    )
    _generate(env, names)
    rerun = _crash_and_rerun(env, step)
    # A crash after save and before commit leaves the batch saved but uncommitted: the
    # rerun must not apply it again. It resumes after the offset the state store applied,
    # ahead of the group's committed offset (and skips nothing it reads).
    resumed = re.search(r"resumes at offset (\d+), .* committed offset is (\d+)", rerun.stderr)
    if step in ("save", "publish") or commit_interval_ms == 0:
        assert resumed and int(resumed.group(1)) > int(resumed.group(2)), rerun.stderr
    else:  # the group's offset may trail the store's, never lead it
        assert resumed is None or int(resumed.group(1)) > int(resumed.group(2)), rerun.stderr
    assert re.search(r"skipped (\d+)", rerun.stderr) is None, rerun.stderr
    assert committed_offsets(names.group, names.input) == end_offsets(names.input)

    inputs = sorted(read_topic(names.input), key=lambda r: (r.partition, r.offset))
    reference, store = replay(
        inputs, load_engine(quick_models), output_topic=names.output, dlq_topic=names.dlq
    )

    # exactly-once state: Redis holds byte for byte what one clean pass computes
    keys = KeySpace(names.prefix)
    users = sorted(store.users)
    stored = stored_users(names.prefix, users)
    assert stored == {u: store.users[u] for u in users}
    r = redis.Redis.from_url(REDIS)
    assert store.model is not None, "the test stream should advance the model at least once"
    assert r.get(keys.model) == store.model
    assert r.get(keys.contribution(names.instance)) == store.contributions["local"]
    r.close()
    # ...and so do the tier counts written with the states: nothing counted twice
    redis_store = RedisStateStore(REDIS, prefix=names.prefix)
    counted = redis_store.tier_counts([(names.input, 0)])[(names.input, 0)]
    redis_store.close()
    clean = store.counts[(names.input, 0)]
    assert {t: n for t, n in counted.population.items() if n} == {
        t: n for t, n in clean.population.items() if n
    }  # (a tier whose count went back to 0 may be stored as 0, or not at all)
    assert sum(clean.population.values()) == len(users)
    assert counted.conversions == clean.conversions and sum(clean.conversions.values()) > 0

    # at-least-once outputs, duplicates identical, per-user order = the reference
    def strip(value: bytes) -> dict[str, object]:
        body: dict[str, object] = orjson.loads(value)
        body.pop("emitted_at", None)
        return body

    copies: dict[str, set[bytes]] = defaultdict(set)
    published: dict[str, list[dict[str, object]]] = defaultdict(list)
    for rec in read_topic(names.output):
        body = orjson.loads(rec.value or b"")
        if body["event_id"] not in copies:
            published[body["user_id"]].append(strip(rec.value or b""))
        copies[body["event_id"]].add(rec.value or b"")
    assert all(len(v) == 1 for v in copies.values()), "a duplicate differs from its original"
    expected: dict[str, list[dict[str, object]]] = defaultdict(list)
    for out in reference:
        if out.topic == names.output:
            expected[out.key.decode()].append(strip(out.value))  # type: ignore[union-attr]
    assert published == expected

    dead = {
        orjson.loads(rec.value or b"")["source_offset"] * 10
        + orjson.loads(rec.value or b"")["source_partition"]
        for rec in read_topic(names.dlq)
    }
    want = {
        orjson.loads(o.value)["source_offset"] * 10 + orjson.loads(o.value)["source_partition"]
        for o in reference
        if o.topic == names.dlq
    }
    assert dead == want and want


def test_kill_between_the_states_and_the_learning_loses_that_batchs_learning_only(
    names: Names, quick_models: Path
) -> None:
    """Step 3a saved the batch's partitions, 3b never ran: its events are applied once
    (features exact), never again; what they taught the models is lost, nothing is
    learned twice (at-most-once learning)."""
    env = names.env(TIERSTREAM_MAX_POLL_RECORDS="150", TIERSTREAM_TIERS_FILE=str(quick_models))
    _generate(env, names)
    _crash_and_rerun(env, "save-partitions")
    inputs = sorted(read_topic(names.input), key=lambda r: (r.partition, r.offset))
    _, store = replay(inputs, load_engine(quick_models))

    stored = stored_users(names.prefix, sorted(store.users))
    for user, raw in store.users.items():
        mine = state_json(stored[user] or b"")["features"]
        assert mine == state_json(raw)["features"], user

    def learned(model: bytes | None, contribution: bytes | None) -> int:
        m, c = orjson.loads(model or b"{}"), orjson.loads(contribution or b"{}")
        return int(m.get("samples_seen", 0) + m.get("labels_seen", 0) + c.get("samples", 0)) + int(
            c.get("labels", 0)
        )

    keys = KeySpace(names.prefix)
    r = redis.Redis.from_url(REDIS)
    live = learned(r.get(keys.model), r.get(keys.contribution(names.instance)))
    r.close()
    clean = learned(store.model, store.contributions["local"])
    assert clean / 2 < live < clean, (live, clean)
