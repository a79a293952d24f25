"""Calls into a client library that must come back within a deadline.

kafka-python 3.0.12 hands each blocking call (a poll, a commit, an admin request) to its
network thread and waits for the answer on a ``threading.Event`` **with no timeout**
(``NetworkSelector.run``). The call's own timeout is enforced on the network thread;
when that answer is lost the caller waits forever. Seen on the multi-node stack after a
broker that coordinated the group or led input partitions was SIGKILLed: the instance
sat in ``KafkaConsumer.poll`` for minutes, holding its partitions (its network thread
kept heart-beating) until ``max.poll.interval.ms`` ran out.

So the service never calls such a method on its own thread: :class:`BoundedCall` runs it
on a worker thread and waits at most ``limit_s``. A call that overruns raises
:class:`~consumer.service.errors.ClientWedged`; its worker is abandoned (a daemon
thread, it ends if the call ever returns) and the next call gets a fresh one. What to do
with the wedged client (close it in the background, make a new one) is the caller's
decision: :class:`~consumer.service.kafka_io.EventSource` replaces its consumer.

Examples
--------
>>> import threading
>>> call = BoundedCall("example client", limit_s=5.0)
>>> call(sum, [1, 2, 3])
6
>>> stuck = threading.Event()
>>> call(stuck.wait, limit_s=0.05)
Traceback (most recent call last):
...
consumer.service.errors.ClientWedged: example client: wait did not return within 0.05 s
>>> call(max, 4, 7)  # a fresh worker: the wedged one is left behind
7
>>> stuck.set()  # (it ends once its call returns)

While a call is in progress, :meth:`BoundedCall.overdue_s` says how long it has outlasted
what it may take by design (``expected_s``: a poll's own wait), from any thread: what
/readyz reads, since the caller's thread is the one waiting.

>>> slow = threading.Event()
>>> worker = threading.Thread(target=call, args=(slow.wait,), kwargs={"expected_s": 0.05})
>>> worker.start(); slow.wait(0.2)
False
>>> 0.1 < call.overdue_s() < 5.0
True
>>> slow.set(); worker.join(); call.overdue_s()
0.0
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from consumer.service.errors import ClientWedged

T = TypeVar("T")
_Job = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class _Worker:
    """One daemon thread running queued calls, in order, until abandoned."""

    def __init__(self, name: str) -> None:
        self.jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            future, fn, args, kwargs = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # handed to the caller, raised on its thread
                future.set_exception(exc)

    def stop(self) -> None:
        self.jobs.put(None)


class BoundedCall:
    """Run calls on a worker thread; wait at most ``limit_s`` for each (see the module
    docstring). Not for concurrent use: one caller thread, one call at a time."""

    def __init__(self, name: str, *, limit_s: float) -> None:
        if limit_s <= 0:
            raise ValueError("limit_s must be > 0")
        #: Named in the error and in the worker thread's name.
        self.name = name
        self.limit_s = limit_s
        #: Calls that overran, since this object was made.
        self.overruns = 0
        self._worker: _Worker | None = None
        #: When the call in progress would be overdue (monotonic), None when none is.
        self._due: float | None = None

    def __call__(
        self,
        fn: Callable[..., T],
        /,
        *args: Any,
        limit_s: float | None = None,
        expected_s: float = 0.0,
        **kwargs: Any,
    ) -> T:
        """``fn(*args, **kwargs)``, or ClientWedged after ``limit_s`` (default: the
        object's). An exception of ``fn`` is raised here, unchanged. ``expected_s``: how
        long the call may take by design (:meth:`overdue_s`)."""
        if self._worker is None:
            self._worker = _Worker(f"bounded {self.name}")
        future: Future[T] = Future()
        self._due = time.monotonic() + expected_s
        self._worker.jobs.put((future, fn, args, kwargs))
        limit = self.limit_s if limit_s is None else limit_s
        try:
            return future.result(timeout=limit)
        except FutureTimeout:
            if future.done():  # it came back just as the wait ended
                return future.result()
            self.overruns += 1
            self._worker.stop()  # after the stuck call, if it ever returns
            self._worker = None
            what = getattr(fn, "__name__", "a call")
            raise ClientWedged(f"{self.name}: {what} did not return within {limit:g} s") from None
        finally:
            self._due = None

    def overdue_s(self) -> float:
        """How long the call in progress has outlasted its ``expected_s``, in seconds (0
        when no call is in progress, or it is within it). Safe from any thread."""
        due = self._due
        return 0.0 if due is None else max(0.0, time.monotonic() - due)

    def close(self) -> None:
        """Let the worker end (after its call in progress, if any)."""
        if self._worker is not None:
            self._worker.stop()
            self._worker = None
