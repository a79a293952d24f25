"""Two instances in one consumer group on a 4-partition topic share one global model:
both contribute to it, every tier change names the version it used, and any two
processes scoring with one version give the same segments, propensities and tiers."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import redis

from consumer.demo.synthetic import GeneratorConfig, generate
from consumer.service.kafka_io import produce_records
from consumer.service.keys import KeySpace
from online_models.state_codec import state_json
from tests.integration.support import (
    KAFKA,
    REDIS,
    REPO,
    Names,
    committed_offsets,
    create_topic,
    end_offsets,
    read_topic,
    recompute_features,
    stored_users,
    wait_for_group,
)

pytestmark = pytest.mark.integration

#: The two-instance test's idle window: long enough for start-up, the join, a stable
#: group and the produce on a loaded machine (see the test).
IDLE_S = "20"

PROBE = """
import sys, orjson, numpy as np, redis
from consumer.service.tier_config import load_engine
from online_models.global_model import GlobalModel
from online_models.user_state import UserState
from pathlib import Path
model = GlobalModel.from_json(orjson.loads(redis.Redis.from_url(sys.argv[1]).get(sys.argv[2])))
engine = load_engine(Path(sys.argv[3]), model=model, frozen=True)
rng = np.random.default_rng(3)
x = rng.normal(size=(500, len(model.feature_names))) * np.array(model.scale) + model.mean
seg, dist, prop = model.score_many(x)
# the engine's own value score for a user with these model outputs (no history)
blank = UserState.new()
values = [engine._value(blank, 0, model.score(list(row))).value for row in x]
tiers = [engine.policy.tiers[engine.policy.raw_tier(v)].name for v in values]
print(orjson.dumps({"name": model.name, "seg": seg.tolist(), "prop": prop.tolist(),
                    "tiers": tiers}).decode())
"""


def test_two_instances_share_one_model(names: Names, quick_models: Path) -> None:
    # Both members are in the group before the first event: each of them has work to do.
    # The events are made first and produced from here once the group is formed, so the
    # members' idle clocks (from their start) are not run down by a generator starting up.
    # An idle clock starts when `run` does, before the group is joined: start-up, the
    # join, the wait for a stable group and the produce must all fit in the idle window,
    # or a member whose group lag is 0 before the first record stops, its partitions go to
    # the other, and the counts read [8000, 0] (once in a full `make test`, with 8 s;
    # a 6 s pause put before the produce stops both members with 8 s, none with 20).
    create_topic(names.input, 4)
    records = [
        (r.key, r.value) for r in generate(GeneratorConfig(users=300, events=8000, seed=9, days=90))
    ]
    procs = []
    started = time.monotonic()
    for i in (1, 2):
        env = names.env(
            TIERSTREAM_INSTANCE_ID=f"{names.instance}-{i}",
            TIERSTREAM_TIERS_FILE=str(quick_models),
            TIERSTREAM_MAX_POLL_RECORDS="300",
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "consumer.cli", "run", "--stop-when-idle", IDLE_S],
                env=env,
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        wait_for_group(names.group, 2)
        produce_records(KAFKA, names.input, records, partitions=4)
        produced_after_s = time.monotonic() - started
    except BaseException:
        for p in procs:
            p.kill()
            p.communicate()
        raise
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    assert committed_offsets(names.group, names.input) == end_offsets(names.input)
    counts = [
        int(m.group(1)) for _, err in outs for m in [re.search(r"(\d+) records in", err)] if m
    ]
    tails = [err[-3000:] for _, err in outs]  # what each instance said, should one idle out
    # both instances did work
    assert sum(counts) == 8000 and all(counts), (counts, produced_after_s, tails)

    keys = KeySpace(names.prefix)
    r = redis.Redis.from_url(REDIS)
    model = orjson.loads(r.get(keys.model) or b"{}")
    contributors = sorted(m.decode() for m in r.smembers(keys.contributors))
    contributions = [orjson.loads(r.get(keys.contribution(c)) or b"{}") for c in contributors]
    r.close()
    # Each version folds in the learning of the instances it names in the log; between
    # them, both instances' learning went into the group's model. (Contributions folded
    # into a version are deleted then, so the store alone cannot tell.)
    folded = {
        name
        for _, err in outs
        for line in re.findall(r"folding in the learning of (.*)", err)
        for name in line.split(", ")
    }
    assert folded == {f"{names.instance}-1", f"{names.instance}-2"}, folded
    assert set(contributors) <= folded
    assert model["version"] >= 2
    # both learned on top of the group's learned versions (not on version 0, not on
    # private models of their own)
    for c in contributions:
        base = re.fullmatch(r"v(\d+)-[0-9a-f]{8}", c["base"])
        assert base and int(base.group(1)) >= 1, c["base"]
    _check_complete(names)

    stamp = re.compile(r"v(\d+)-[0-9a-f]{8}\.[0-9a-f]{6}")
    versions = set()
    for rec in read_topic(names.output):
        body = orjson.loads(rec.value or b"")
        m = stamp.fullmatch(body["model_version"])
        assert m, body["model_version"]
        versions.add(int(m.group(1)))
    assert max(versions) >= 1, "no tier change was scored by a learned version"

    probes = [
        subprocess.run(
            [sys.executable, "-c", PROBE, REDIS, keys.model, str(quick_models)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        for _ in range(2)
    ]
    for p in probes:
        assert p.returncode == 0, p.stderr
    a, b = (orjson.loads(p.stdout) for p in probes)
    assert a["name"] == b["name"] == model["name"]
    assert a == b  # 100% agreement on the probe set
    assert len(set(a["seg"])) > 1


def _check_complete(names: Names) -> None:
    """Every user's tier changes are on the topic, gap-free from seq 1 up to the seq their
    stored state has reached; copies are identical."""
    copies: dict[str, set[bytes]] = {}
    seqs: dict[str, list[int]] = {}
    for rec in read_topic(names.output):
        body = orjson.loads(rec.value or b"")
        if body["event_id"] not in copies:
            seqs.setdefault(body["user_id"], []).append(body["seq"])
        copies.setdefault(body["event_id"], set()).add(rec.value or b"")
    assert all(len(v) == 1 for v in copies.values()), "a copy differs from its original"
    users = sorted(seqs)
    stored = [state_json(v or b"") for v in stored_users(names.prefix, users).values()]
    for user, state in zip(users, stored, strict=True):
        assert seqs[user] == list(range(1, state["seq"] + 1)), user


def test_an_instance_takes_over_a_dead_ones_partitions(names: Names, quick_models: Path) -> None:
    """Two instances learn and publish; one is killed (SIGKILL) mid-stream. The other gets
    its partitions once its session expires, publishes what it left in the outboxes, fires
    its users' timers, and the group finishes: every event applied once, every change of
    every stored state on the topic, in order."""
    create_topic(names.input, 4)
    records = [
        (r.key, r.value)
        for r in generate(GeneratorConfig(users=400, events=30_000, seed=12, days=90))
    ]
    # A third of the stream comes after the kill, into every partition: the victim's
    # cannot be done before it dies (on a fast machine they could be, and the survivor
    # then stopped when idle before the victim's session expired).
    later = len(records) * 2 // 3
    produce_records(KAFKA, names.input, records[:later], partitions=4)
    base = names.env(TIERSTREAM_TIERS_FILE=str(quick_models), TIERSTREAM_MAX_POLL_RECORDS="200")
    victim = subprocess.Popen(
        [sys.executable, "-m", "consumer.cli", "run"],
        env={**base, "TIERSTREAM_INSTANCE_ID": f"{names.instance}-victim"},
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # The victim's partitions come to the survivor once its session expires (10 s, the
    # default TIERSTREAM_KAFKA_SESSION_TIMEOUT_S): a survivor idle for less than that
    # after its own partitions' records could stop before the takeover.
    survivor = subprocess.Popen(
        [sys.executable, "-m", "consumer.cli", "run", "--stop-when-idle", "15"],
        env={**base, "TIERSTREAM_INSTANCE_ID": f"{names.instance}-survivor"},
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_group(names.group, 2)
        deadline = time.monotonic() + 60
        while sum(v or 0 for v in committed_offsets(names.group, names.input).values()) < 6000:
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.2)
        victim.kill()
        victim.wait()
        produce_records(KAFKA, names.input, records[later:], partitions=4)
        _, err = survivor.communicate(timeout=300)
    finally:
        for p in (victim, survivor):
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert survivor.returncode == 0, err
    acquired = re.findall(r"partitions acquired: (.*)", err)
    assert acquired and len(acquired[-1].split(", ")) == 4, acquired  # all four, at the end
    assert committed_offsets(names.group, names.input) == end_offsets(names.input)
    _check_complete(names)
    # every event applied exactly once: the stored features are the closed-form ones
    expected = recompute_features(read_topic(names.input))
    stored = stored_users(names.prefix, expected)
    for user, want in expected.items():
        f = state_json(stored[user] or b"")["features"]
        assert (f["events"], f["purchases"], f["last_ms"]) == (
            want.events,
            want.purchases,
            want.last_ms,
        ), user
