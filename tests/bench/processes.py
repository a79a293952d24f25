"""Child processes of the throughput bench: started with their output in files, reaped
with ``os.wait4`` so each one's own peak memory (``ru_maxrss``: the kernel's high-water
mark of its resident set, what ``/proc/<pid>/status`` shows as ``VmHWM``) and CPU time
are known."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
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
    max_rss_mb: float
    stdout: str
    stderr: str


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

    @property
    def pid(self) -> int:
        return self._proc.pid

    def terminate(self) -> None:
        """SIGTERM: the service finishes its batch, commits and exits."""
        self._proc.send_signal(signal.SIGTERM)

    def reap(self, timeout_s: float) -> Finished:
        """Wait for the exit (SIGKILL after ``timeout_s``) and read the output files."""
        deadline = self.started + timeout_s
        while True:
            pid, status, usage = os.wait4(self._proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                self._proc.kill()
                pid, status, usage = os.wait4(self._proc.pid, 0)
                break
            time.sleep(0.02)
        wall = time.monotonic() - self.started
        self._proc.returncode = os.waitstatus_to_exitcode(status)
        return Finished(
            self.name,
            self._proc.returncode,
            wall,
            usage.ru_utime + usage.ru_stime,
            usage.ru_maxrss / 1024,  # Linux reports KiB
            self._out.read_text(errors="replace"),
            self._err.read_text(errors="replace"),
        )


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
