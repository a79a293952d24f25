"""The throughput bench's table (tests/bench/bench_throughput.py): a run whose records
took no longer than its empty runs says so instead of printing a rate of nan."""

from __future__ import annotations

from tests.bench.bench_throughput import TOO_SHORT, _throughput_table
from tests.bench.contenders import Throughput
from tests.bench.redis_memory import RedisUse
from tests.bench.workloads import Workload


def test_a_run_no_longer_than_its_empty_runs_is_too_short_to_time() -> None:
    quix = Throughput("Quix Streams app", 6000, 0.5, 0.4, 3.0, [80.0], 300)
    timed = Throughput("`tierstream run`, 1 instance", 6000, 0.4, 0.3, 3.1, [90.0], 300)
    short = Throughput("`tierstream run`, 2 instances", 6000, -0.1, -0.2, 2.6, [90.0, 91.0], 300)
    table = _throughput_table(
        Workload("dense", 300, 6000, 30), [quix, timed, short], RedisUse(300, 300.0, 400.0)
    )
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines()}
    assert "**15,000**" in rows["`tierstream run`, 1 instance"]
    assert "nan" not in table
    assert rows["`tierstream run`, 2 instances"].count(TOO_SHORT) == 2
    assert f"*{TOO_SHORT}*: the run took no longer" in table
