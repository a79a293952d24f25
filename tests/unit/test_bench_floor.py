"""The throughput bench's floor (tests/bench/floor_service.py) cuts the engine down to the
Quix app's work and nothing else: its examples run here (the bench's directory is not
collected), so a change of the engine's interface cannot leave the floor measuring
something else unnoticed."""

from __future__ import annotations

import doctest

from tests.bench import floor_service


def test_the_floors_examples_hold() -> None:
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    failed, attempted = doctest.testmod(floor_service, optionflags=flags)
    assert attempted >= 5 and failed == 0
