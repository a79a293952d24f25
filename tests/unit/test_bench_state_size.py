"""What tests/bench/state_size.py says a stored state holds (docs/performance.md quotes
it): its example runs here (the bench's directory is not collected)."""

from __future__ import annotations

import doctest

from tests.bench import state_size


def test_its_example_holds() -> None:
    failed, attempted = doctest.testmod(state_size)
    assert attempted >= 1 and failed == 0
