"""Log lines: plain text for people, or JSON lines for a log pipeline
(``TIERSTREAM_LOG_FORMAT=json``).

A notable event (partitions assigned or revoked, a new model version, dead letters, a
retry) is logged with ``extra={"event": ..., ...}``: in JSON its fields are keys of the
line, so a pipeline filters on ``event`` without parsing the message. Messages never
hold a secret (URLs are masked where they are made); nothing else of the record is
copied.

>>> import logging
>>> record = logging.LogRecord("consumer.service.ownership", logging.INFO, "", 0,
...     "partitions acquired: %s", ("events:0",), None)
>>> record.event, record.partitions = "assignment", ["events:0"]
>>> line = orjson.loads(JsonFormatter().format(record))
>>> line["event"], line["partitions"], line["message"], line["level"]
('assignment', ['events:0'], 'partitions acquired: events:0', 'info')
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Final

import orjson

from consumer.service.errors import SettingsError
from online_models.timefmt import iso_utc_ms

FORMATS: Final = ("text", "json")
#: The ``extra`` keys a JSON line carries.
FIELDS: Final = (
    "event",
    "partitions",
    "model_version",
    "folded",
    "reasons",
    "count",
    "error",
    "delay_s",
    "offset",
    "topic",
)
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Log lines that may wait for stderr; past that they are dropped (and counted).
QUEUE_LINES: Final = 10_000
#: How long an exit waits for the waiting lines to be written.
FLUSH_TIMEOUT_S: Final = 2.0


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": iso_utc_ms(round(record.created * 1000)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in FIELDS:
            if key in record.__dict__:
                line[key] = record.__dict__[key]
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class NonBlockingHandler(logging.Handler):
    """Hands each record to a writer thread and never waits for it: when stderr does not
    keep up (a pipe nobody reads, a stalled log collector), lines are dropped and counted,
    and the count is written once stderr takes lines again.

    A handler that writes in place blocks the thread that logs while the stream is full,
    and holds the handler's lock meanwhile, so every other thread that logs blocks too.
    kafka-python's network thread logs (a broker down, a coordinator lost): once it
    blocked, every Kafka call of the process waited on it forever. A lost log line costs
    less than a stalled service.

    >>> import io
    >>> out = io.StringIO()
    >>> target = logging.StreamHandler(out)
    >>> handler = NonBlockingHandler(target, capacity=2)
    >>> log = logging.getLogger("example.nonblocking")
    >>> log.addHandler(handler); log.propagate = False
    >>> log.warning("a broker is down")
    >>> handler.flush()
    >>> out.getvalue()
    'a broker is down\\n'
    >>> handler.close(); log.removeHandler(handler)
    """

    def __init__(self, target: logging.Handler, *, capacity: int = QUEUE_LINES) -> None:
        super().__init__()
        self.target = target
        #: Records dropped because the queue was full, since the start.
        self.dropped = 0
        self._reported = 0
        self._closed = False
        self._queue: queue.Queue[logging.LogRecord | None] = queue.Queue(capacity)
        self._writer = threading.Thread(target=self._write, name="log writer", daemon=True)
        self._writer.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            record.message = record.getMessage()
            if record.exc_info and not record.exc_text:  # the traceback, while it exists
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            self._queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1
        except Exception:  # a bad format string: logging's own report
            self.handleError(record)

    def _write(self) -> None:
        while (record := self._queue.get()) is not None:
            try:
                dropped = self.dropped
                if dropped > self._reported:
                    self.target.handle(_dropped(dropped - self._reported, record))
                    self._reported = dropped
                self.target.handle(record)
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def flush(self, timeout_s: float = FLUSH_TIMEOUT_S) -> None:
        """Wait at most ``timeout_s`` for the waiting lines to be written."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)
        if not self._queue.unfinished_tasks:
            with contextlib.suppress(ValueError, OSError):  # a stream closed under us
                self.target.flush()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.flush()
        # A writer stuck on a full stream (the queue full too) is a daemon: left behind.
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        super().close()


class RepeatFilter(logging.Filter):
    """Lets a message of the Kafka client through once per ``window_s``; the copies in
    between are counted, and the next one let through says how many there were.

    kafka-python logs "Marking the coordinator dead" on every attempt while a broker is
    down: a thousand identical lines in seconds, which hide everything else.

    >>> f = RepeatFilter(window_s=10, clock=iter([0, 1, 2, 12]).__next__)
    >>> def line(msg):
    ...     record = logging.LogRecord("kafka.coordinator", logging.WARNING, "", 0, msg, (), None)
    ...     return record.getMessage() if f.filter(record) else None
    >>> [line("coordinator dead") for _ in range(4)]
    ['coordinator dead', None, None, 'coordinator dead (2 more like it in the last 12 s)']
    """

    def __init__(
        self,
        *,
        window_s: float = 10.0,
        prefix: str = "kafka",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.window_s = window_s
        self.prefix = prefix
        self._clock = clock
        #: Per message: when it was last let through, copies held back since.
        self._seen: dict[str, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefix):
            return True
        now, key = self._clock(), record.getMessage()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.window_s:
            self._seen[key] = (seen[0], seen[1] + 1)
            return False
        if len(self._seen) > 1000:  # many distinct messages: forget the old ones
            self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self.window_s}
        self._seen[key] = (now, 0)
        if seen is not None and seen[1]:
            record.msg = f"{key} ({seen[1]} more like it in the last {now - seen[0]:.0f} s)"
            record.args = ()
        return True


class ClosedTransportFilter(logging.Filter):
    """kafka-python 3.0's network thread may read a connection the client has just
    closed (a read racing the close: at a stop, after a rebalance, after a connection
    error), and logs it as an ERROR with a traceback ending in ``'NoneType' object has no
    attribute 'recv'``. Nothing failed: the connection was closed on purpose, and nothing
    was in flight on it. Such a record is made a debug line without its traceback (shown
    only when the log level is debug); any other error of the client passes as it is.
    Seen at the end of 3 of 164 runs of ``tests.bench.batch_steps``.

    >>> f = ClosedTransportFilter()
    >>> def record(transport):
    ...     try:
    ...         None.recv(4096)  # type: ignore[attr-defined]
    ...     except AttributeError:
    ...         info = sys.exc_info()
    ...     return logging.LogRecord("kafka.net.transport", logging.ERROR, "", 0,
    ...         "%s: Error receiving network data closing socket", (transport,), info)
    >>> f.filter(record("<KafkaTCPTransport [none] (closed)>"))
    False
    >>> f.filter(record("<KafkaTCPTransport [node 1] (connected)>"))
    True
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "kafka.net.transport" or record.levelno < logging.ERROR:
            return True
        exc = record.exc_info[1] if record.exc_info else None
        message = record.getMessage()
        if not (
            isinstance(exc, AttributeError) and "NoneType" in str(exc) and "(closed)" in message
        ):
            return True
        if not logging.getLogger().isEnabledFor(logging.DEBUG):
            return False
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        record.msg, record.args = f"{message}: a read raced the close ({exc})", ()
        record.exc_info, record.exc_text = None, None
        return True


def _dropped(n: int, before: logging.LogRecord) -> logging.LogRecord:
    record = logging.LogRecord(
        __name__,
        logging.WARNING,
        __file__,
        0,
        "%d log lines dropped: stderr did not take them in time",
        (n,),
        None,
    )
    record.created = before.created
    return record


def flush() -> None:
    """Write what the root logger's handlers hold (bounded): before a last message on
    stderr and at exit."""
    for handler in logging.getLogger().handlers:
        handler.flush()


def configure(level: str, fmt: str) -> None:
    """Log to stderr at ``level`` in ``fmt`` (``text`` or ``json``), through a
    :class:`NonBlockingHandler`; the Kafka client's own chatter only from warnings up."""
    if fmt not in FORMATS:
        raise SettingsError(f"TIERSTREAM_LOG_FORMAT={fmt!r}: expected text or json")
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler = NonBlockingHandler(stream)  # closed (flushed) by logging's own exit hook
    handler.addFilter(ClosedTransportFilter())
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    for old in root.handlers:
        if isinstance(old, NonBlockingHandler):
            old.close()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))
    logging.getLogger("kafka").setLevel(logging.WARNING)
    # Its event loop warns whenever a task ran over 0.1 s: routine on a busy machine
    # (a GC pause, two cores shared with the broker), and nothing a user can act on.
    logging.getLogger("kafka.net.selector").setLevel(logging.ERROR)
