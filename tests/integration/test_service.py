"""The running service: metrics and health endpoints, SIGTERM, an unreachable broker."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from consumer.service.kafka_io import produce_records
from tests.integration.support import (
    KAFKA,
    REPO,
    Names,
    cli,
    committed_offsets,
    end_offsets,
    start_service,
)

pytestmark = pytest.mark.integration

#: A Redis that is not there, with a password in its URL.
REDIS_WITH_PASSWORD = "redis://:s3cret-pw@127.0.0.1:1/0"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


def wait_for(predicate, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise TimeoutError("condition not met in time")


def test_metrics_health_and_sigterm(names: Names) -> None:
    gen = cli(
        "generate",
        "--users",
        "50",
        "--events",
        "3000",
        "--bad-fraction",
        "0.01",
        "--topic",
        names.input,
        "--partitions",
        "2",
        env=names.env(),
    )
    assert gen.returncode == 0, gen.stderr
    port = free_port()
    env = names.env(TIERSTREAM_METRICS_PORT=str(port), TIERSTREAM_METRICS_HOST="127.0.0.1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "consumer.cli", "run"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _up(base + "/healthz"))
        assert get(base + "/healthz") == (200, "ok\n")
        wait_for(lambda: get(base + "/readyz")[0] == 200)

        def all_read() -> bool:
            _, body = get(base + "/metrics")
            return 'tierstream_events_total{result="applied"}' in body and _sum_events(body) >= 3000

        wait_for(all_read)
        _, body = get(base + "/metrics")
        for name in (
            "tierstream_dlq_records_total{reason=",
            "tierstream_tier_changes_total{",
            "tierstream_batch_duration_seconds_bucket",
            "tierstream_consumer_lag_records",
            "tierstream_last_event_timestamp_seconds",
            "tierstream_assigned_partitions 2.0",
        ):
            assert name in body, name
        assert "user_id" not in body and 'from_tier="none"' in body
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "3000 records" in err
    assert committed_offsets(names.group, names.input) == end_offsets(names.input)


def _up(url: str) -> bool:
    try:
        return get(url)[0] == 200
    except OSError:
        return False


def _sum_events(body: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line.startswith("tierstream_events_total{")
    )


def test_unreachable_broker_is_one_line(names: Names) -> None:
    env = names.env(
        TIERSTREAM_KAFKA_BOOTSTRAP="127.0.0.1:1", TIERSTREAM_KAFKA_CONNECT_TIMEOUT_S="3"
    )
    result = cli("run", env=env, timeout=60)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("tierstream: error: cannot reach Kafka at 127.0.0.1:1"), result.stderr
    assert "Traceback" not in result.stderr


def test_an_instance_holding_no_partition_is_ready(names: Names) -> None:
    """Two instances, one input partition: the one the group gives nothing is still ready
    (ready means connected and able to take partitions), or a rolling deploy of more
    replicas than partitions would stall on it."""
    gen = cli(
        "generate", "--users", "20", "--events", "200", "--topic", names.input,
        "--partitions", "1", env=names.env(),
    )  # fmt: skip
    assert gen.returncode == 0, gen.stderr
    ports = [free_port(), free_port()]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "consumer.cli", "run"],
            env=names.env(
                TIERSTREAM_METRICS_PORT=str(port),
                TIERSTREAM_METRICS_HOST="127.0.0.1",
                TIERSTREAM_INSTANCE_ID=f"member-{i}",
            ),
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, port in enumerate(ports)
    ]
    try:
        held = {}

        def settled() -> bool:
            for port in ports:
                _, body = get(f"http://127.0.0.1:{port}/metrics")
                line = [x for x in body.splitlines() if x.startswith("tierstream_assigned_")]
                held[port] = float(line[0].rsplit(" ", 1)[1]) if line else -1.0
            return sorted(held.values()) == [0.0, 1.0]

        wait_for(lambda: all(_up(f"http://127.0.0.1:{p}/healthz") for p in ports))
        wait_for(settled, timeout=90)
        idle = next(p for p, n in held.items() if n == 0.0)
        wait_for(lambda: get(f"http://127.0.0.1:{idle}/readyz")[0] == 200, timeout=30)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        errs = [proc.communicate(timeout=60)[1] for proc in procs]
    assert [p.returncode for p in procs] == [0, 0], errs


def test_json_logs_are_one_object_per_line_with_the_events(names: Names) -> None:
    gen = cli(
        "generate", "--users", "30", "--events", "800", "--bad-fraction", "0.05",
        "--topic", names.input, "--partitions", "2", env=names.env(),
    )  # fmt: skip
    assert gen.returncode == 0, gen.stderr
    env = names.env(TIERSTREAM_LOG_FORMAT="json", TIERSTREAM_REDIS_URL=REDIS_WITH_PASSWORD)
    done = cli("run", "--stop-when-idle", "2", env=names.env(TIERSTREAM_LOG_FORMAT="json"))
    assert done.returncode == 0, done.stderr
    logged = [line for line in done.stderr.splitlines() if not line.startswith("tierstream:")]
    lines = [json.loads(line) for line in logged]  # every log line is one JSON object
    events = {line.get("event") for line in lines}
    assert {"assignment", "dead_letters"} <= events, events
    assign = next(line for line in lines if line.get("event") == "assignment")
    assert sorted(assign["partitions"]) == [f"{names.input}:0", f"{names.input}:1"]
    dead = [line for line in lines if line.get("event") == "dead_letters"]
    assert sum(d["count"] for d in dead) == sum(sum(d["reasons"].values()) for d in dead) > 0
    bad = cli("run", env=env, timeout=120)  # a password never reaches a log line or an error
    assert bad.returncode == 2 and "s3cret-pw" not in bad.stderr + bad.stdout


def _events(names: Names, start: int, n: int) -> list[tuple[bytes, bytes]]:
    return [
        (
            f"u{i % 40}".encode(),
            json.dumps(
                {
                    "event_id": f"{names.input}-{i}",
                    "user_id": f"u{i % 40}",
                    "event_type": "page_view",
                    "timestamp": 1_767_225_600_000 + i * 1000,
                }
            ).encode(),
        )
        for i in range(start, start + n)
    ]


#: Records the instance is still busy with when it is stopped (50 a batch).
BACKLOG = 30_000


def test_the_commit_interval_holds_offsets_back_until_idle_or_stop(names: Names) -> None:
    """With a commit interval far longer than the test, the group's offsets still reach
    what was applied: at once when the instance goes idle, and when it stops in the
    middle of a stream (the interval only spares the commits in between)."""
    produce_records(KAFKA, names.input, _events(names, 0, 600), partitions=2)
    env = names.env(TIERSTREAM_COMMIT_INTERVAL_MS="600000", TIERSTREAM_MAX_POLL_RECORDS="50")
    proc = start_service(env)
    try:
        # idle after 12 batches or more: everything applied is committed
        wait_for(lambda: committed_offsets(names.group, names.input) == end_offsets(names.input))
        # a backlog it is busy with (no idle poll), and a stop in the middle of it: the
        # instance is paused while the backlog is produced (it would keep up with it)
        backlog = 600 + BACKLOG
        proc.send_signal(signal.SIGSTOP)
        try:
            produce_records(KAFKA, names.input, _events(names, 600, BACKLOG), partitions=2)
        finally:
            proc.send_signal(signal.SIGCONT)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    applied = int(re.search(r"tierstream: (\d+) records in", err).group(1))  # type: ignore[union-attr]
    assert 600 < applied < backlog, "stopped while busy"
    committed = committed_offsets(names.group, names.input)
    assert sum(v or 0 for v in committed.values()) == applied, (committed, applied)
