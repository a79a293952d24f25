"""Tier populations and conversion per tier in a running deployment (issue 10): what
`/metrics` exports and what `tierstream snapshot` reports equal what Redis counted, and
Redis counted exactly its users; a state written before users were counted is refused
in one line until `tierstream state recount` has counted it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from consumer.service.redis_store import RedisStateStore
from consumer.service.tier_config import DEFAULT_TIERS_FILE
from consumer.service.tier_counts import TierCounts, conversion_labels
from online_models.control_group import ControlGroup
from tests.integration.support import (
    REDIS,
    REPO,
    Names,
    cli,
    committed_offsets,
    control_flags,
    end_offsets,
    free_port,
    populations,
    start_service,
)

pytestmark = pytest.mark.integration

PARTITIONS = 2


def generate(names: Names, seed: int, users: int = 300, events: int = 9000) -> None:
    gen = cli(
        "generate", "--users", str(users), "--events", str(events), "--seed", str(seed),
        "--days", "90", "--topic", names.input, "--partitions", str(PARTITIONS), env=names.env(),
    )  # fmt: skip
    assert gen.returncode == 0, gen.stderr


def control_tiers(tmp_path: Path) -> Path:
    """The default tiers with 30% of users held out: enough control labels per tier."""
    text = DEFAULT_TIERS_FILE.read_text()
    assert "share = 0.05" in text
    path = tmp_path / "tiers.toml"
    path.write_text(text.replace("share = 0.05", "share = 0.3"))
    return path


def redis_conversions(prefix: str, topic: str) -> dict[tuple[str, str, str], int]:
    store = RedisStateStore(REDIS, prefix=prefix)
    try:
        total = TierCounts()
        for counts in store.tier_counts([(topic, p) for p in range(PARTITIONS)]).values():
            total.add(counts)
    finally:
        store.close()
    return {conversion_labels(k): n for k, n in total.conversions.items() if n}


def scrape(port: int) -> dict[str, dict[tuple[str, ...], float]]:
    """Every sample of /metrics: by sample name, by label values (sorted by label)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, dict[tuple[str, ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(s.labels[k] for k in sorted(s.labels))] = s.value
    return out


def test_metrics_and_snapshot_report_what_redis_counted(names: Names, tmp_path: Path) -> None:
    generate(names, seed=41)
    port = free_port()
    env = names.env(
        TIERSTREAM_METRICS_PORT=str(port),
        TIERSTREAM_METRICS_HOST="127.0.0.1",
        TIERSTREAM_TIERS_FILE=str(control_tiers(tmp_path)),
    )
    proc = start_service(env)
    try:
        deadline = time.monotonic() + 120
        while committed_offsets(names.group, names.input) != end_offsets(names.input):
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the stream was not consumed in time"
            time.sleep(0.5)
        time.sleep(1)  # the last batch's metrics are set right after its commit
        metrics = scrape(port)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err

    # populations: the gauge per partition and tier is what Redis counted, which is the
    # stored users' tiers
    counted, found = populations(names.prefix, names.input)
    assert counted == found and sum(sum(t.values()) for t in found.values()) > 200
    gauge = metrics["tierstream_tier_population"]
    exported: dict[int, dict[str, int]] = {p: {} for p in range(PARTITIONS)}
    for (partition, tier, topic), value in gauge.items():
        assert topic == names.input
        if value:
            exported[int(partition)][tier] = int(value)
    assert exported == counted
    n, wrong = control_flags(names.output, ControlGroup(0.3, "tierstream-control-1"))
    assert n > 100 and not wrong, wrong[:5]

    # conversion per tier and group: /metrics counted the labels the batches resolved,
    # Redis the ones its partitions saved; the same, in both groups
    conversions = {
        (tier, group, outcome): int(v)
        for (group, outcome, tier), v in metrics["tierstream_tier_conversions_total"].items()
    }
    assert conversions == redis_conversions(names.prefix, names.input)
    groups = Counter(g for (_, g, o), n in conversions.items() if o == "converted" and n)
    assert groups["treated"] >= 2 and groups["control"] >= 2, conversions

    snapshot, summary_file = tmp_path / "snapshot.jsonl", tmp_path / "summary.json"
    snap = cli("snapshot", "--out", str(snapshot), "--summary-out", str(summary_file), env=env)
    assert snap.returncode == 0, snap.stderr
    assert "treated: conversion (labels)" in snap.stderr
    lines = [orjson.loads(x) for x in snapshot.read_bytes().splitlines()]
    summary = orjson.loads(summary_file.read_bytes())
    assert summary["users"] == len(lines)
    assert {t["tier"]: t["users"] for t in summary["tiers"] if t["users"]} == Counter(
        x["tier"] for x in lines
    )
    reported = {}
    for row in summary["tiers"]:
        for group in ("treated", "control"):
            counts = row[group]
            if counts["resolved"]:
                assert counts["conversion"] == counts["converted"] / counts["resolved"]
                reported[row["tier"], group] = (counts["resolved"], counts["converted"])
    want: dict[tuple[str, str], list[int]] = {}
    for (tier, group, outcome), n in conversions.items():
        both = want.setdefault((tier, group), [0, 0])
        both[0] += n
        both[1] += n if outcome == "converted" else 0
    assert reported == {k: tuple(v) for k, v in want.items()}


def test_each_partition_is_reported_by_its_owner_only(names: Names) -> None:
    """One instance reports every partition's population; a second joins and takes a
    partition: the first stops reporting it (the series leave with the revocation), the
    second reports it, from Redis, before any new record."""
    generate(names, seed=45, users=100, events=1500)
    assert cli("run", "--stop-when-idle", "2", env=names.env()).returncode == 0
    counted, _ = populations(names.prefix, names.input)
    ports, procs = [free_port(), free_port()], []

    def reported(port: int) -> dict[int, dict[str, int]]:
        try:
            gauge = scrape(port).get("tierstream_tier_population", {})
        except OSError:
            return {}
        out: dict[int, dict[str, int]] = {}
        for (partition, tier, _), value in gauge.items():
            if value:
                out.setdefault(int(partition), {})[tier] = int(value)
        return out

    def wait(what: str, done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 60
        while not done():
            assert all(p.poll() is None for p in procs), "an instance stopped"
            assert time.monotonic() < deadline, what
            time.sleep(0.5)

    try:
        for i, port in enumerate(ports):
            env = names.env(
                TIERSTREAM_INSTANCE_ID=f"{names.instance}-{i}",
                TIERSTREAM_METRICS_PORT=str(port),
                TIERSTREAM_METRICS_HOST="127.0.0.1",
            )
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "consumer.cli", "run"],
                    env=env,
                    cwd=REPO,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            if i == 0:
                wait("the first instance to report both partitions",
                     lambda: reported(ports[0]) == counted)  # fmt: skip

        def split() -> bool:
            a, b = reported(ports[0]), reported(ports[1])
            return len(a) == len(b) == 1 and {**a, **b} == counted

        wait("each instance to report the one partition it owns, and only it", split)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            assert proc.wait(timeout=60) == 0


def test_a_state_not_counted_is_refused_until_recounted(names: Names) -> None:
    generate(names, seed=43, users=150, events=3000)
    env = names.env()
    assert cli("run", "--stop-when-idle", "2", env=env).returncode == 0
    # As a version before the counts left it: no counts, not marked counted, and every
    # user state with a time-to-live of its own.
    store = RedisStateStore(REDIS, prefix=names.prefix)
    r, keys = store.client, store.keys
    users = list(r.scan_iter(match=keys.all_users, count=1000))
    for p in range(PARTITIONS):
        r.delete(keys.populations(names.input, p))
    r.srem(keys.counted, names.input)
    for key in users:
        r.expire(key, 3600)

    refused = cli("run", "--stop-when-idle", "2", env=env)
    assert refused.returncode == 2, refused.stderr
    errors = [line for line in refused.stderr.splitlines() if line.startswith("tierstream:")]
    assert len(errors) == 1 and "tierstream state recount" in errors[0], refused.stderr

    dry = cli("state", "recount", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert f"would count {len(users)} users" in dry.stderr
    assert not store.populations_counted(names.input)
    done = cli("state", "recount", env=env)
    assert done.returncode == 0, done.stderr
    assert f"counted {len(users)} users" in done.stderr
    assert f"{len(users)} time-to-lives removed" in done.stderr
    assert all(r.ttl(key) == -1 for key in users)
    counted, found = populations(names.prefix, names.input)
    assert counted == found and sum(sum(t.values()) for t in found.values()) == len(users)

    generate(names, seed=44, users=150, events=2000)  # the service goes on from there
    assert cli("run", "--stop-when-idle", "2", env=env).returncode == 0
    counted, found = populations(names.prefix, names.input)
    assert counted == found
    store.close()
    # three runs (restarts), one flag per user: the group this process draws
    n, wrong = control_flags(names.output, ControlGroup(0.05, "tierstream-control-1"))
    assert n > 100 and not wrong, wrong[:5]
