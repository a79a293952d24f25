"""Child processes of the throughput bench: started with their output in files, reaped
with ``os.wait4`` so each one's CPU time is known, and watched while they run for their
own peak memory: the high-water mark of their resident set, ``VmHWM`` in
``/proc/<pid>/status``, read every 100 ms by a thread of each child's until it exits
(several children run at once, and are reaped one after the other).

Not ``ru_maxrss``: Linux carries a process's high-water mark over ``execve`` into the new
program's, so a child's ``ru_maxrss`` is at least the bench's own peak when it was
started (``/bin/sleep`` started from a process that once held 350 MB reports 350 MB),
and the bench grows with the workloads it generates.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.integration.support import REPO


def say(message: str) -> None:
    """A progress line on stderr (the tables go to stdout)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Finished:
    """What a child process did."""

    name: str
    returncode: int
    wall_s: float  #: from start to exit
    cpu_s: float  #: user + system CPU time, all its threads
    #: The child's own peak resident set (VmHWM, last read before it exited).
    max_rss_mb: float
    stdout: str
    stderr: str


#: How often a child's high-water mark is read. ``VmHWM`` only grows, so a sample misses
#: only what the child grew in its last interval; every read is CPU of the bench's own
#: process, which shares the machine with the service (a read every 20 ms of each of two
#: children was 4% of a core during the latency runs).
PEAK_EVERY_S = 0.1


class Child:
    """A running child process; :meth:`reap` waits for it and returns :class:`Finished`."""

    def __init__(
        self, name: str, argv: Sequence[str], *, env: Mapping[str, str], logs: Path
    ) -> None:
        self.name = name
        logs.mkdir(parents=True, exist_ok=True)
        self._out = logs / f"{name}.out"
        self._err = logs / f"{name}.err"
        self.started = time.monotonic()
        with self._out.open("wb") as out, self._err.open("wb") as err:
            self._proc = subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=REPO,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )
        self._peak_kb = 0
        self._reaped = threading.Event()
        self._watch = threading.Thread(target=self._watch_peak, daemon=True)
        self._watch.start()

    def _watch_peak(self) -> None:
        """Keep the child's own high-water mark until it is reaped (a zombie has none)."""
        while not self._reaped.is_set():
            self._peak_kb = max(self._peak_kb, own_peak_kb(self._proc.pid))
            self._reaped.wait(PEAK_EVERY_S)

    def stderr_so_far(self) -> str:
        """What the child has written to stderr so far."""
        return self._err.read_text(errors="replace")

    @property
    def pid(self) -> int:
        return self._proc.pid

    def terminate(self) -> None:
        """SIGTERM: the service finishes its batch, commits and exits."""
        self._signal(signal.SIGTERM)

    def _signal(self, sig: int) -> None:
        """``os.kill``, not ``Popen.send_signal``: that polls first, and would reap a
        child that has exited (a service that died early), leaving :meth:`reap`'s
        ``wait4`` no child and its status lost. Until reaped, the pid is the child's."""
        os.kill(self._proc.pid, sig)

    def reap(self, timeout_s: float) -> Finished:
        """Wait for the exit (SIGKILL after ``timeout_s``) and read the output files."""
        deadline = self.started + timeout_s
        while True:
            pid, status, usage = os.wait4(self._proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                self._signal(signal.SIGKILL)
                pid, status, usage = os.wait4(self._proc.pid, 0)
                break
            time.sleep(0.02)
        wall = time.monotonic() - self.started
        self._reaped.set()
        self._watch.join()
        self._proc.returncode = os.waitstatus_to_exitcode(status)
        return Finished(
            self.name,
            self._proc.returncode,
            wall,
            usage.ru_utime + usage.ru_stime,
            self._peak_kb / 1024,
            self._out.read_text(errors="replace"),
            self._err.read_text(errors="replace"),
        )


def own_peak_kb(pid: int) -> int:
    """The process's own resident high-water mark in KiB (``VmHWM``; 0 once it has exited).

    >>> own_peak_kb(os.getpid()) > 0
    True
    """
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def stat_fields(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name, from the state on
    (empty once the process is gone).

    >>> stat_fields(os.getpid())[0]
    'R'
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()
    except OSError:
        return []


def cpu_seconds(pid: int) -> float:
    """CPU time the process has used so far, user and system, in seconds (its threads
    included; 0.0 once it has exited).

    >>> cpu_seconds(os.getpid()) > 0
    True
    """
    fields = stat_fields(pid)
    if not fields:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_idle_seconds() -> float:
    """CPU time all of the machine's cores have spent idle since boot, in seconds (idle
    and waiting for I/O).

    >>> machine_idle_seconds() > 0
    True
    """
    with open("/proc/stat") as f:
        fields = f.readline().split()
    return (int(fields[4]) + int(fields[5])) / os.sysconf("SC_CLK_TCK")


def run(
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    logs: Path,
    timeout_s: float,
) -> Finished:
    """Start a child and wait for it; a non-zero exit is an error with its last lines."""
    done = Child(name, argv, env=env, logs=logs).reap(timeout_s)
    check(done)
    return done


def check(done: Finished) -> None:
    """Raise with the tail of its stderr if the child failed."""
    if done.returncode != 0:
        tail = "\n".join(done.stderr.splitlines()[-25:])
        raise RuntimeError(f"{done.name} exited with status {done.returncode}:\n{tail}")


def python(module: str, *args: str) -> list[str]:
    """argv running ``python -m module args`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def environ(**extra: str) -> dict[str, str]:
    """This process's environment plus ``extra``."""
    return {**os.environ, **extra}
