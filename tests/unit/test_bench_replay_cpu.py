"""The replay yardstick (tests/bench/replay_cpu.py) that docs/performance.md quotes: its
example runs in test_bench_examples.py, and a change that makes a
replay publish other bytes changes its digest."""

from __future__ import annotations

import io

from consumer.demo.synthetic import GeneratorConfig, generate
from consumer.tools.sources import jsonl_records
from tests.bench import replay_cpu


def test_other_outputs_give_another_digest() -> None:
    config = GeneratorConfig(users=20, events=400, seed=3, bad_fraction=0.0)
    lines = b"\n".join(r.value for r in generate(config))
    records = list(jsonl_records(io.BytesIO(lines), "events"))
    whole, fewer = replay_cpu.replay_cpu(records), replay_cpu.replay_cpu(records[:40])
    assert 0 < fewer.outputs < whole.outputs and fewer.digest != whole.digest
