"""The examples of the bench modules whose figures the docs quote run here (the bench's
directory is not collected by pytest): the floor (tests/bench/floor_service.py, which
cuts the engine down to the Quix app's work: a change of the engine's interface cannot
leave it measuring something else unnoticed), the replay yardstick, the count of silent
users' re-scores, the revenue ceiling's windows, the spend head's rows a non-linear head
would be fitted on, what a stored state holds, the state dictionary's training, the
median of the latency runs `make bench` reports and the publisher's CPU table."""

from __future__ import annotations

import doctest
from types import ModuleType

import pytest

from tests.bench import (
    bench_throughput,
    floor_service,
    publisher_cpu,
    replay_cpu,
    revenue_ceiling,
    silent_fires,
    state_dictionary,
    state_size,
    value_head,
)


@pytest.mark.parametrize(
    ("module", "examples"),
    [
        (floor_service, 5),
        (replay_cpu, 2),
        (silent_fires, 3),
        (revenue_ceiling, 5),
        (state_size, 1),
        (state_dictionary, 1),
        (bench_throughput, 1),
        (value_head, 1),
        (publisher_cpu, 1),
    ],
    ids=lambda v: v.__name__.rsplit(".", 1)[-1] if isinstance(v, ModuleType) else str(v),
)
def test_the_bench_modules_examples_hold(module: ModuleType, examples: int) -> None:
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    failed, attempted = doctest.testmod(module, optionflags=flags)
    assert attempted >= examples and failed == 0
