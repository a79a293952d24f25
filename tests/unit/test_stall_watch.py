"""StallWatch names a held partition only when its position was still for long enough
and over enough polls; a move, an idle verdict or a revocation starts it over."""

from __future__ import annotations

import pytest

from consumer.service.stall_watch import StallWatch

P = ("events", 0)


def test_one_long_batch_between_two_polls_is_not_a_stall() -> None:
    w = StallWatch(stall_s=10.0, min_polls=3)
    assert w.observe({P: 5}, now=0.0) == []
    assert w.observe({P: 5}, now=100.0) == []  # a 100 s batch: one poll only
    assert w.observe({P: 5}, now=100.5) == []
    assert w.observe({P: 5}, now=101.0) == [P]


def test_a_moving_position_is_never_suspected() -> None:
    w = StallWatch(stall_s=1.0, min_polls=1)
    for i in range(50):
        assert w.observe({P: i}, now=float(i)) == []


def test_idle_and_revoked_partitions_start_over() -> None:
    w = StallWatch(stall_s=2.0, min_polls=1)
    w.observe({P: 5}, now=0.0)
    assert w.observe({P: 5}, now=3.0) == [P]
    w.idle([P], now=3.0)
    assert w.observe({P: 5}, now=4.0) == []
    assert w.observe({P: 5}, now=5.5) == [P]
    assert w.observe({}, now=6.0) == []  # revoked
    assert w.observe({P: 5}, now=9.0) == []  # acquired again: a clock of its own
    assert w.quiet_for(P, now=9.0) == 0.0


def test_a_stall_time_must_be_positive() -> None:
    with pytest.raises(ValueError, match="stall_s"):
        StallWatch(stall_s=0)
