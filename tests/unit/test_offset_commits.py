"""Step 6 of the commit protocol held back by a commit interval
(:mod:`consumer.service.offset_commits`): nothing applied is left uncommitted, nothing is
committed backwards, a failed commit is tried again."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from consumer.service.errors import BrokerError
from consumer.service.offset_commits import DeferredCommits, Partition

P0, P1 = ("in", 0), ("in", 1)


class Group:
    """Records what was committed; fails the next commit when told to."""

    def __init__(self) -> None:
        self.commits: list[dict[Partition, int]] = []
        self.fail_next = False

    def commit(self, next_offsets: Mapping[Partition, int]) -> None:
        if self.fail_next:
            self.fail_next = False
            raise BrokerError("the coordinator moved")
        self.commits.append(dict(next_offsets))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_interval_of_zero_commits_every_batch() -> None:
    group = Group()
    commits = DeferredCommits(group, interval_s=0.0)
    for offset in (10, 20, 30):
        commits.commit({P0: offset})
    assert group.commits == [{P0: 10}, {P0: 20}, {P0: 30}]


def test_the_newest_offset_of_each_partition_goes_out_once_the_interval_passed() -> None:
    group, clock = Group(), Clock()
    commits = DeferredCommits(group, interval_s=1.0, clock=clock)
    commits.commit({P0: 5})
    clock.now += 0.5
    commits.commit({P0: 9, P1: 3})
    commits.commit({P0: 7})  # an older offset (a batch's second round) never goes back
    assert group.commits == [{P0: 5}]
    clock.now += 0.5
    commits.commit({P1: 4})
    assert group.commits == [{P0: 5}, {P0: 9, P1: 4}]
    assert commits.pending == {}


def test_a_failed_commit_stays_pending_and_goes_out_with_the_next() -> None:
    group, clock = Group(), Clock()
    commits = DeferredCommits(group, interval_s=1.0, clock=clock)
    commits.commit({P0: 5})
    commits.commit({P0: 8, P1: 2})
    group.fail_next = True
    with pytest.raises(BrokerError):
        commits.flush()
    assert commits.pending == {P0: 8, P1: 2}
    commits.commit({P1: 6})  # within the interval of the failed attempt: held
    commits.flush()
    assert group.commits == [{P0: 5}, {P0: 8, P1: 6}]


def test_a_partition_given_up_is_not_committed_by_this_instance() -> None:
    group, clock = Group(), Clock()
    commits = DeferredCommits(group, interval_s=1.0, clock=clock)
    commits.commit({P0: 1})
    commits.commit({P0: 40, P1: 50})
    commits.drop([P1])  # its new owner may have committed further already
    commits.flush()
    assert group.commits == [{P0: 1}, {P0: 40}]


def test_a_negative_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        DeferredCommits(Group(), interval_s=-1.0)


def test_an_idle_flush_with_nothing_pending_does_not_hold_back_the_next_commit() -> None:
    group, clock = Group(), Clock()
    commits = DeferredCommits(group, interval_s=1.0, clock=clock)
    commits.flush()  # the first poll brought nothing
    clock.now += 0.1
    commits.commit({P0: 3})  # the first batch: committed at once
    assert group.commits == [{P0: 3}]
