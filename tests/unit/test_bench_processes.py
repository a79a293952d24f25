"""The bench's children report their own peak memory, not the bench's."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tests.bench import processes


def test_a_child_reports_its_own_peak_not_the_one_it_inherits(tmp_path: Path) -> None:
    """Linux carries the starting process's resident high-water mark over ``execve``
    into the child's ``ru_maxrss``: a small child of a process that once held 200 MB
    would report 200 MB. Its own ``VmHWM`` is a few MB."""
    held = bytearray(200 * 1024 * 1024)
    held[::4096] = b"\1" * len(held[::4096])  # touch every page: resident
    del held
    code = "import time; time.sleep(0.3)"
    done = processes.run(
        "small", [sys.executable, "-S", "-c", code], env={}, logs=tmp_path, timeout_s=30
    )
    assert 0 < done.max_rss_mb < 50


def test_children_reaped_one_after_the_other_each_report_their_peak(tmp_path: Path) -> None:
    """The bench starts instances together and reaps them in turn: one that exits while
    another is reaped still has its peak."""
    code = "import time; time.sleep(0.3)"
    argv = [sys.executable, "-S", "-c", code]
    slow = processes.Child(
        "slow", [*argv[:-1], "import time; time.sleep(1)"], env={}, logs=tmp_path
    )
    quick = processes.Child("quick", argv, env={}, logs=tmp_path)
    assert slow.reap(30).max_rss_mb > 0
    assert quick.reap(30).max_rss_mb > 0


def test_a_child_that_exited_before_it_is_stopped_is_still_reaped(tmp_path: Path) -> None:
    """A service that died early (a bad setting, a crash) is stopped and reaped like the
    others, and its status and output are what the bench reports: ``Popen.send_signal``
    would reap it first (it polls), and the bench's own ``wait4`` then found no child."""
    child = processes.Child(
        "dead", [sys.executable, "-S", "-c", "raise SystemExit(3)"], env={}, logs=tmp_path
    )
    end = time.monotonic() + 30
    while processes.stat_fields(child.pid)[:1] != ["Z"]:  # exited, not reaped yet
        assert time.monotonic() < end, "the child did not exit"
        time.sleep(0.01)
    child.terminate()
    done = child.reap(30)
    assert done.returncode == 3
