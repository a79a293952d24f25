"""The throughput bench (`make bench`, tests/bench/bench_throughput.py) in its quick mode,
end to end against the stack, so the harness cannot rot between full runs: every
contender, the latency and the memory measurement run and land in the doc's generated
section, which a second write replaces instead of appending to. Slow: ``make test-slow``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench import report
from tests.bench.bench_throughput import TOO_SHORT
from tests.integration.support import KAFKA, REDIS, REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CONTENDERS = (
    "raw kafka-python poll + orjson.loads",
    "Quix Streams app (RocksDB state + changelog, produce on change)",
    "`tierstream run`, 1 instance",
    "`tierstream run`, 2 instances",
    "`tierstream run` with the engine cut to the Quix app's work (dedup + feature fold), "
    "1 instance",
    "`tierstream run` with the engine cut to the Quix app's work (dedup + feature fold), "
    "2 instances",
)


def _number(text: str) -> float:
    return float(text.strip("* ").replace(",", ""))


def _rows(text: str, heading: str) -> list[list[str]]:
    """The body rows of the first table after ``heading``."""
    after = text.split(heading, 1)[1]
    lines = [line for line in after.split("\n\n", 2)[1].splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in lines[2:]]


def test_the_bench_runs_every_measurement_and_writes_its_section(
    stack: None, tmp_path: Path
) -> None:
    doc = tmp_path / "performance.md"
    doc.write_text("# Performance\n\nWritten by hand.\n")
    argv = ["--quick", "--rates", "500", "--latency-seconds", "2", "--doc", str(doc)]
    env = {**os.environ, "TIERSTREAM_TEST_KAFKA": KAFKA, "TIERSTREAM_TEST_REDIS": REDIS}
    done = subprocess.run(
        [sys.executable, "-m", "tests.bench.bench_throughput", *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "[bench " in done.stderr  # progress lines while it runs
    text = doc.read_text()
    assert text.startswith("# Performance\n\nWritten by hand.\n")
    start, end = report.markers("bench")
    assert text.count(start) == text.count(end) == 1
    assert done.stdout.strip() in text  # the printed tables are the ones written

    for workload in ("### Dense: 300 users", "### Sparse catch-up: 1,000 users"):
        rows = _rows(text, workload)
        assert [r[0] for r in rows] == list(CONTENDERS)
        # events/s: the raw client and Quix Streams time themselves; a `tierstream run`
        # of --quick's few records may take no longer than its empty runs (whose group
        # join alone varies by seconds with two instances), which the table then says
        assert all(_number(r[1]) > 0 and _number(r[4]) > 0 for r in rows[:2]), rows
        assert all(TOO_SHORT in r[1] or _number(r[1]) > 0 for r in rows[2:]), rows
        assert all(TOO_SHORT in r[4] or _number(r[4]) > 0 for r in rows[2:]), rows
        assert [r[2] for r in rows][1] == "1.00x"  # the ratio is to Quix Streams
        assert [r[7] for r in rows][4:] == ["0", "0"], rows  # the floor decides nothing
        assert all(_number(r[7]) > 0 for r in rows[1:4]), rows  # the others do
        assert all(_number(m) > 20 for r in rows for m in r[6].split(" + ")), rows  # RSS
        # two instances learn what one learns; the floor and the others learn nothing
        assert rows[2][8] == rows[3][8] and _number(rows[2][8].split(" / ")[0]) > 0, rows
        assert [r[8] for r in rows[:2] + rows[4:]] == ["—"] * 4, rows
        assert re.search(r"Redis after the 1-instance run: [\d,]+ bytes per user key", text)
        # the dense workload's Quix app and service alternate in rounds (--quick: two),
        # each service row with every round's ratio; the rest ran once
        rounds = [r[9].count(", ") + 1 if r[9] != "—" else 0 for r in rows]
        assert rounds == ([0, 0, 2, 2, 0, 0] if workload.startswith("### Dense") else [0] * 6)
    assert text.count("ran 2 rounds, alternated") == 1

    latency = _rows(text, "### Event-to-tier-change latency")
    assert [r[0] for r in latency] == ["1", "2"], latency  # instances in one group
    for row in latency:
        assert row[3].startswith("1,000 ") and row[4] == "1,000", row  # all out
        assert 0 < _number(row[5]) <= _number(row[6]) <= _number(row[7])

    (memory,) = _rows(text, "### Memory")
    assert memory[0] == "500" and _number(memory[2]) > 400  # users in Redis
    assert _number(memory[4]) > 20 and _number(memory[5]) > 100  # MB, bytes per user

    report.write_section(doc, "bench", "## unused", "replaced")
    assert report.markers("bench")[0] + "\nreplaced\n" in doc.read_text()
    assert doc.read_text().count(start) == 1
