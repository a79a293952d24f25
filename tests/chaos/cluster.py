"""Instances of ``tierstream run`` in one consumer group, and what watches them.

:class:`Instance` is one member (restarted under the same instance id, killed, paused,
resumed, steered step-exactly through :mod:`tests.chaos.instance`); :class:`Cluster` holds
the members of a scenario, a supervisor that restarts an instance that exits on its own
(recorded as a crash), and monitors that sample ``/readyz``, the partitions' applied
offsets and outboxes in Redis, and the group's state (through
:mod:`tests.chaos.group_watch`). The servers and topics are :mod:`tests.chaos.harness`'s.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import redis

from tests.chaos.harness import (
    REPO,
    Endpoints,
    HarnessError,
    Names,
    Producer,
    RedisView,
    Timeline,
    committed_offsets,
    free_port,
    http_get,
)


@dataclass
class Exit:
    """How one process of an instance ended."""

    instance: str
    start: int
    returncode: int | None
    expected: bool
    at: float
    tail: list[str]


class Instance:
    """One ``tierstream run`` member of the group; restarted under the same instance id."""

    def __init__(self, cluster: Cluster, name: str, env: dict[str, str]) -> None:
        self.cluster = cluster
        self.name = name
        self.env = env
        self.control = cluster.workdir / f"control-{name}"
        self.control.mkdir(parents=True, exist_ok=True)
        self.log_path = cluster.workdir / f"{name}.log"
        self.proc: subprocess.Popen[str] | None = None
        self.starts = 0
        self.metrics_port = 0
        self.wanted = False  # should be running (the supervisor restarts it if it dies)
        self.expect_exit = False
        self.paused = False
        self.tail: deque[str] = deque(maxlen=400)
        self.exits: list[Exit] = []
        self._chaos_kill = False
        self._reader: threading.Thread | None = None
        self.lock = threading.RLock()

    # -- life cycle
    def start(self) -> None:
        """Start a new process of this instance (on a new metrics port)."""
        with self.lock:  # the supervisor must not see the new flags with the old process
            self._start()

    def _start(self) -> None:
        if self.alive:
            raise HarnessError(f"{self.name} is already running")
        for stale in self.control.glob("at-*"):
            stale.unlink()
        self.metrics_port = free_port()
        env = {
            **self.env,
            "TIERSTREAM_METRICS_PORT": str(self.metrics_port),
            "TIERSTREAM_METRICS_HOST": "127.0.0.1",
            "TIERSTREAM_CHAOS_CONTROL": str(self.control),
        }
        self.starts += 1
        self.tail.clear()
        self.expect_exit = False
        self._chaos_kill = False
        self.paused = False
        self.wanted = True
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.chaos.instance"],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            bufsize=1,
        )
        self.cluster.timeline.note(
            f"start {self.name} #{self.starts} (pid {self.proc.pid}, metrics :{self.metrics_port})"
        )
        self._reader = threading.Thread(
            target=self._read, args=(self.proc, self.starts), name=f"read-{self.name}", daemon=True
        )
        self._reader.start()

    def _read(self, proc: subprocess.Popen[str], start: int) -> None:
        assert proc.stderr is not None
        with self.log_path.open("a") as log:
            log.write(f"--- start #{start} pid {proc.pid}\n")
            for line in proc.stderr:
                line = line.rstrip("\n")
                now = time.monotonic()
                log.write(f"{self.cluster.timeline.rel(now):8.2f} {line}\n")
                log.flush()
                self.tail.append(line)
                if line.startswith("chaos: kill"):
                    self._chaos_kill = True
                for callback in list(self.cluster.line_callbacks):
                    callback(self, line, now)
        proc.stderr.close()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _record_exit(self, expected: bool) -> Exit:
        assert self.proc is not None
        if self._reader is not None:
            self._reader.join(5)
        ex = Exit(
            self.name,
            self.starts,
            self.proc.returncode,
            expected or self._chaos_kill,
            time.monotonic(),
            list(self.tail),
        )
        self.exits.append(ex)
        self.cluster.timeline.note(
            f"{self.name} #{self.starts} exited rc={ex.returncode}"
            + ("" if ex.expected else " UNEXPECTEDLY")
        )
        return ex

    def kill(self, why: str = "") -> float:
        """SIGKILL now; return when it was sent."""
        if not self.alive:
            raise HarnessError(f"{self.name} is not running")
        assert self.proc is not None
        self.expect_exit = True
        if self.paused:
            self.paused = False
        t = self.cluster.timeline.note(f"SIGKILL {self.name} #{self.starts} {why}".rstrip())
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self._record_exit(True)
        return t

    def terminate(self, timeout: float = 90.0) -> int | None:
        """SIGTERM (the graceful stop) and wait; None if it had to be SIGKILLed."""
        if not self.alive:
            return self.proc.returncode if self.proc else None
        assert self.proc is not None
        self.expect_exit = True
        self.wanted = False
        if self.paused:
            self.resume()
        self.cluster.timeline.note(f"SIGTERM {self.name} #{self.starts}")
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.cluster.timeline.note(f"{self.name} ignored SIGTERM for {timeout:.0f}s: SIGKILL")
            self.proc.kill()
            self.proc.wait(30)
            self._record_exit(False)
            return None
        ex = self._record_exit(self.proc.returncode == 0)
        return ex.returncode

    def pause(self, why: str = "") -> float:
        """SIGSTOP: the whole process freezes (heartbeats included), as in a long GC or
        VM pause."""
        assert self.proc is not None
        self.paused = True
        t = self.cluster.timeline.note(f"SIGSTOP {self.name} #{self.starts} {why}".rstrip())
        self.proc.send_signal(signal.SIGSTOP)
        return t

    def resume(self, why: str = "") -> float:
        """SIGCONT."""
        assert self.proc is not None
        self.paused = False
        t = self.cluster.timeline.note(f"SIGCONT {self.name} #{self.starts} {why}".rstrip())
        self.proc.send_signal(signal.SIGCONT)
        return t

    def request(self, step: str, action: str) -> None:
        """Ask the process to ``kill`` or ``stop`` itself right after ``step`` of its next
        batch (see :mod:`tests.chaos.instance`)."""
        if action == "kill":
            self.expect_exit = True
        (self.control / f"at-{step}").write_text(action)
        self.cluster.timeline.note(f"request {self.name}: {action} after next {step}")

    def cancel_requests(self) -> None:
        for stale in self.control.glob("at-*"):
            stale.unlink(missing_ok=True)
        self.expect_exit = False

    def stacks(self, lines: int = 60) -> list[str]:
        """Every thread's stack (SIGUSR1, see :mod:`tests.chaos.instance`) and the log
        lines before them: what a report shows of an instance that did not do what was
        asked of it."""
        if self.alive and not self.paused and self.proc is not None:
            self.proc.send_signal(signal.SIGUSR1)
            time.sleep(1.0)
        return list(self.tail)[-lines:]

    def is_stopped(self) -> bool:
        """Has the process stopped itself (state T)?"""
        if not self.alive or self.pid is None:
            return False
        try:
            return Path(f"/proc/{self.pid}/stat").read_text().split()[2] == "T"
        except OSError:
            return False

    # -- HTTP
    def readyz(self) -> str:
        """``ready``, ``not ready`` or ``no answer``."""
        got = http_get(self.metrics_port, "/readyz")
        if got is None:
            return "no answer"
        return "ready" if got[0] == 200 else "not ready"

    def metrics(self) -> dict[str, float] | None:
        """The instance's Prometheus samples (``name{labels}`` -> value), None if it does
        not answer."""
        got = http_get(self.metrics_port, "/metrics", timeout=2.0)
        if got is None or got[0] != 200:
            return None
        out: dict[str, float] = {}
        for line in got[1].splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[name] = float(value)
        return out


@dataclass
class Sample:
    """One look at the partitions' progress."""

    t: float
    applied: dict[int, int] | None  # None: Redis did not answer
    outbox: dict[int, int] | None
    produced: dict[int, int]

    @property
    def lag(self) -> int | None:
        if self.applied is None:
            return None
        return sum(max(0, end - 1 - self.applied.get(p, -1)) for p, end in self.produced.items())


class Cluster:
    """Instances of one consumer group, supervised and monitored (see the module doc)."""

    def __init__(
        self,
        names: Names,
        endpoints: Endpoints,
        workdir: Path,
        *,
        partitions: int,
        env: dict[str, str],
        timeline: Timeline | None = None,
        restart_delay_s: float = 1.0,
    ) -> None:
        self.names = names
        self.endpoints = endpoints
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.partitions = partitions
        self.env = env
        self.timeline = timeline or Timeline()
        self.restart_delay_s = restart_delay_s
        self.instances: dict[str, Instance] = {}
        self.line_callbacks: list[Callable[[Instance, str, float], None]] = []
        self.redis = RedisView(endpoints.redis, names.prefix, names.input, partitions)
        self.producer: Producer | None = None
        self.samples: list[Sample] = []
        self.ready: list[tuple[float, str, int, str]] = []  # t, instance, start, status
        self.group: list[tuple[float, str, list[list[int]]]] = []
        self.crashes: list[Exit] = []
        self.republished_lines: list[tuple[float, str, int]] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._watch: subprocess.Popen[str] | None = None
        self.line_callbacks.append(self._scan_line)

    # -- instances
    def add(self, name: str, **extra_env: str) -> Instance:
        env = {**self.env, "TIERSTREAM_INSTANCE_ID": self.names.instance(name), **extra_env}
        inst = Instance(self, name, env)
        self.instances[name] = inst
        return inst

    def live(self) -> list[Instance]:
        """Instances running and not frozen."""
        return [i for i in self.instances.values() if i.alive and not i.paused]

    _REPUBLISH = re.compile(r"publishing (\d+) pending outputs of (\S+):(\d+)")

    def _scan_line(self, inst: Instance, line: str, now: float) -> None:
        m = self._REPUBLISH.search(line)
        if m:
            self.republished_lines.append((now, inst.name, int(m.group(1))))
            self.timeline.note(f"{inst.name} republishes {m.group(1)} outputs of p{m.group(3)}")

    # -- monitors
    def start_monitors(self) -> None:
        for target in (self._supervise, self._sample, self._poll_ready):
            t = threading.Thread(target=target, name=target.__name__, daemon=True)
            t.start()
            self._threads.append(t)
        self._watch = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.chaos.group_watch",
                self.endpoints.kafka,
                self.names.group,
                self.names.input,
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        t = threading.Thread(target=self._read_group, name="group", daemon=True)
        t.start()
        self._threads.append(t)

    def _supervise(self) -> None:
        while not self._stop.wait(0.1):
            for inst in list(self.instances.values()):
                with inst.lock:
                    if not inst.wanted or inst.proc is None or inst.proc.poll() is None:
                        continue
                    if inst.expect_exit or inst._chaos_kill:
                        continue  # the scenario killed it and restarts it when it wants
                    ex = inst._record_exit(False)
                self.crashes.append(ex)
                self._stop.wait(self.restart_delay_s)
                with inst.lock:  # the scenario may have started it meanwhile
                    if not self._stop.is_set() and inst.wanted and not inst.alive:
                        inst.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.25):
            produced = dict(self.producer.acked_end) if self.producer else {}
            try:
                applied, outbox = self.redis.progress()
                sample = Sample(time.monotonic(), applied, outbox, produced)
            except redis.RedisError:
                sample = Sample(time.monotonic(), None, None, produced)
            self.samples.append(sample)

    def _poll_ready(self) -> None:
        while not self._stop.wait(0.2):
            for inst in list(self.instances.values()):
                if inst.alive and not inst.paused:
                    status = inst.readyz()
                    self.ready.append((time.monotonic(), inst.name, inst.starts, status))

    def _read_group(self) -> None:
        assert self._watch is not None and self._watch.stdout is not None
        for line in self._watch.stdout:
            with contextlib.suppress(ValueError):
                data = json.loads(line)
                self.group.append((float(data["t"]), str(data["state"]), data["members"]))
                self.timeline.note(f"group {data['state']} {data['members']}", at=float(data["t"]))
        self._watch.stdout.close()

    def group_state(self) -> tuple[str, list[list[int]]]:
        """The group's latest state and assignment ("unknown" before the first look)."""
        if not self.group:
            return "unknown", []
        _, state, members = self.group[-1]
        return state, members

    # -- waiting
    def wait_for(self, what: str, cond: Callable[[], bool], timeout: float) -> bool:
        """Poll ``cond`` until true or ``timeout``; note a timeout on the timeline."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return True
            time.sleep(0.05)
        self.timeline.note(f"gave up waiting for {what} after {timeout:.0f}s")
        return False

    def wait_group(self, members: int, timeout: float = 60.0) -> bool:
        """Until the group is Stable with ``members`` members, each holding partitions."""

        def stable() -> bool:
            state, assignment = self.group_state()
            return state == "Stable" and sum(1 for m in assignment if m) == members

        return self.wait_for(f"group stable with {members} members", stable, timeout)

    def caught_up(self, end: dict[int, int]) -> bool:
        """Is every partition applied up to ``end`` (next offsets) with empty outboxes?"""
        try:
            applied, outbox = self.redis.progress()
        except redis.RedisError:
            return False
        return all(applied.get(p, -1) >= e - 1 for p, e in end.items()) and not any(outbox.values())

    def wait_caught_up(self, end: dict[int, int], timeout: float) -> bool:
        """Until every partition is applied to ``end``, the outboxes are empty and the
        group committed ``end``. False (and a note) on timeout: a stall."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.caught_up(end):
                try:
                    committed = committed_offsets(
                        self.endpoints.kafka, self.names.group, self.names.input
                    )
                except Exception:
                    committed = {}
                if all(committed.get(p) == e for p, e in end.items()):
                    self.timeline.note("caught up: applied, published and committed")
                    return True
            time.sleep(0.5)
        self.timeline.note(f"STALLED: not caught up after {timeout:.0f}s")
        return False

    def stall_report(self, end: dict[int, int]) -> str:
        """Per partition: applied vs end, outbox length; per instance: alive, last lines."""
        lines = []
        try:
            applied, outbox = self.redis.progress()
            for p in sorted(end):
                lines.append(
                    f"  p{p}: applied {applied.get(p)} of {end[p] - 1}, "
                    f"outbox {outbox.get(p)} entries"
                )
        except redis.RedisError as exc:
            lines.append(f"  Redis does not answer: {exc}")
        for inst in self.instances.values():
            state = "alive" if inst.alive else "down"
            lines.append(f"  {inst.name} ({state}, {inst.starts} starts), last lines:")
            lines.extend(f"    {x}" for x in list(inst.tail)[-8:])
        return "\n".join(lines)

    # -- figures
    def lag_peak(self, since: float | None = None) -> int:
        """The largest lag (records produced and acknowledged, not yet applied) seen."""
        return max((s.lag or 0 for s in self.samples if since is None or s.t >= since), default=0)

    def pause_after(self, t0: float) -> float | None:
        """Seconds from ``t0`` until every partition that had records waiting (at ``t0``
        or later) applied a new one: how long the fault at ``t0`` held work up. None if
        some partition never moved again."""
        before = [s for s in self.samples if s.t <= t0 and s.applied is not None]
        after = [s for s in self.samples if s.t > t0 and s.applied is not None]
        if not before or not after:
            return None
        base = cast(dict[int, int], before[-1].applied)
        worst = 0.0
        for p in range(self.partitions):
            waiting = any(s.produced.get(p, 0) - 1 > base.get(p, -1) for s in after)
            if not waiting:
                continue
            moved = next(
                (
                    s.t
                    for s in after
                    if cast(dict[int, int], s.applied).get(p, -1) > base.get(p, -1)
                ),
                None,
            )
            if moved is None:
                return None
            worst = max(worst, moved - t0)
        return worst

    def back_to_lag(self, t0: float, limit: int) -> float | None:
        """Seconds from ``t0`` until the lag is ``limit`` records or less again (the
        backlog a fault built up is worked off); None if it never is."""
        for s in self.samples:
            lag = s.lag
            if s.t >= t0 and lag is not None and lag <= limit:
                return s.t - t0
        return None

    def lag_at(self, t0: float) -> int:
        """The lag of the last sample before ``t0``."""
        return next((s.lag or 0 for s in reversed(self.samples) if s.t <= t0), 0)

    # -- end
    def stop_all(self, timeout: float = 90.0) -> dict[str, int | None]:
        """SIGTERM every running instance (each finishes its batch and leaves)."""
        codes = {}
        for inst in self.instances.values():
            inst.wanted = False
            if inst.alive:
                codes[inst.name] = inst.terminate(timeout)
        return codes

    def close(self) -> None:
        """Stop monitors and kill whatever still runs (always called)."""
        self._stop.set()
        for inst in self.instances.values():
            inst.wanted = False
            if inst.alive and inst.proc is not None:
                inst.expect_exit = True
                with contextlib.suppress(OSError):
                    inst.proc.send_signal(signal.SIGCONT)
                    inst.proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    inst.proc.wait(10)
        if self._watch is not None:
            self._watch.kill()
            self._watch.wait(10)
        for t in self._threads:
            t.join(5)
