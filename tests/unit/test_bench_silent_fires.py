"""The count of silent users' re-scores (tests/bench/silent_fires.py) that
docs/performance.md quotes: its example runs in test_bench_examples.py, and it counts
what the replay fires."""

from __future__ import annotations

import io

from consumer.demo.synthetic import GeneratorConfig, generate
from consumer.service.records import InputRecord
from consumer.tools.sources import jsonl_records
from tests.bench import silent_fires


def _records(days: int) -> list[InputRecord]:
    config = GeneratorConfig(users=30, events=600, days=days, seed=5, bad_fraction=0.0)
    lines = b"\n".join(r.value for r in generate(config))
    return list(jsonl_records(io.BytesIO(lines), "events"))


def test_a_day_of_events_has_no_silence_to_count_and_months_do() -> None:
    day = silent_fires.silent_fires(_records(1))
    assert day.rescores == 0 and day.changes == 0
    months = silent_fires.silent_fires(_records(120))
    assert months.rescores > 0
    assert min(months.by_silence) >= 7  # the first re-score is a week into a silence
    assert sum(months.outputs.values()) > 0
    table = silent_fires.table(months)
    assert table.count("\n") == len(months.by_silence) + 2
