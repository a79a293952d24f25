"""The throughput bench's table (tests/bench/bench_throughput.py): a run whose records
took no longer than its empty runs says so instead of printing a rate of nan; a contender
run in rounds shows each round's ratio to the Quix app."""

from __future__ import annotations

from tests.bench.bench_throughput import TOO_SHORT, Ratio, _throughput_table, median_ratio
from tests.bench.contenders import Throughput
from tests.bench.redis_memory import RedisUse
from tests.bench.workloads import Workload


def test_a_run_no_longer_than_its_empty_runs_is_too_short_to_time() -> None:
    quix = Throughput("Quix Streams app", 6000, 0.5, 0.4, 3.0, [80.0], 300)
    timed = Throughput("`tierstream run`, 1 instance", 6000, 0.4, 0.3, 3.1, [90.0], 300)
    short = Throughput("`tierstream run`, 2 instances", 6000, -0.1, -0.2, 2.6, [90.0, 91.0], 300)
    rows = [Ratio(r, r.rate / quix.rate) for r in (quix, timed, short)]
    table = _throughput_table(Workload("dense", 300, 6000, 30), rows, RedisUse(300, 300.0, 400.0))
    lines = {line.split(" | ")[0].strip("| "): line for line in table.splitlines()}
    assert "**15,000**" in lines["`tierstream run`, 1 instance"]
    assert "nan" not in table
    assert lines["`tierstream run`, 2 instances"].count(TOO_SHORT) == 2
    assert f"*{TOO_SHORT}*: the run took no longer" in table
    assert "ran 2 rounds" not in table and "ran 3 rounds" not in table  # one run each
    assert all(line.endswith("| — |") for line in table.splitlines() if line.startswith("| `"))


def test_a_contender_run_in_rounds_shows_its_median_and_every_round() -> None:
    quix = Throughput("Quix Streams app", 6000, 0.5, 0.4, 3.0, [80.0], 300)
    runs = [
        Throughput("`tierstream run`, 2 instances", 6000, seconds, 1.0, 3.0, [90.0], 300)
        for seconds in (1.0, 0.625, 2.0)
    ]
    # each against its own round's Quix run, not the median Quix row (12,000/s): 6,000/s
    # was 0.5x of its round's
    row = median_ratio(runs, [0.5, 0.8, 0.25])
    assert row.run is runs[0] and row.ratio == 0.5
    quix = Throughput("Quix Streams app", 6000, 0.25, 0.2, 3.0, [80.0], 300)  # 24,000/s
    table = _throughput_table(
        Workload("dense", 300, 6000, 30, runs=3), [Ratio(quix, 1.0), row], RedisUse(300, 1, 1)
    )
    line = next(x for x in table.splitlines() if x.startswith("| `tierstream run`"))
    assert "| **6,000** | 0.50x |" in line and line.endswith("| 0.50x, 0.80x, 0.25x |")
    assert "ran 3 rounds, alternated" in table
