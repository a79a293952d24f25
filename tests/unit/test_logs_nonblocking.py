"""Logging never blocks the service (issue 9): a stderr that nobody reads (a pipe of a
parent that does not drain it, a stalled log collector) made kafka-python's network
thread block inside a log call, holding the handler's lock, and with it every Kafka
call of the process. Lines are dropped and counted instead."""

from __future__ import annotations

import logging
import os
import re
import threading
import time

from consumer.service.logs import NonBlockingHandler


def test_logging_into_a_pipe_nobody_reads_returns_and_counts_what_it_dropped() -> None:
    read_end, write_end = os.pipe()  # blocking, as a child's inherited stderr is
    stream = os.fdopen(write_end, "w", buffering=1)
    handler = NonBlockingHandler(logging.StreamHandler(stream), capacity=100)
    log = logging.getLogger("test.nonblocking")
    log.propagate = False
    log.addHandler(handler)
    try:
        done = threading.Event()

        def chatter() -> None:  # ~10 MB of lines: far more than a pipe holds (64 KiB)
            for i in range(20_000):
                log.warning("connection to broker 2 failed, line %d %s", i, "x" * 500)
            done.set()

        threading.Thread(target=chatter, daemon=True).start()
        assert done.wait(30), "a log call blocked on the full pipe"
        assert handler.dropped > 0
        dropped = handler.dropped

        # The reader comes back: lines flow again, and the count is reported first.
        received = bytearray()
        threading.Thread(target=_read_into, args=(read_end, received), daemon=True).start()
        handler.flush(timeout_s=10)
        log.warning("after the stall")
        handler.flush(timeout_s=10)
        text = _wait_for(received, "after the stall")
        counts = re.findall(
            r"^(\d+) log lines dropped: stderr did not take them in time$", text, re.M
        )
        assert sum(map(int, counts)) == dropped  # each drop counted once, none lost
        written = text.count("connection to broker 2 failed")
        assert written + dropped == 20_000
    finally:  # whatever happened, drain the pipe so that nothing here stays blocked
        threading.Thread(target=_read_into, args=(read_end, bytearray()), daemon=True).start()
        log.removeHandler(handler)
        handler.close()
        stream.close()


def _read_into(fd: int, out: bytearray) -> None:
    while chunk := os.read(fd, 1 << 16):
        out += chunk


def _wait_for(received: bytearray, text: str) -> str:
    deadline = time.monotonic() + 10
    while text not in bytes(received).decode() and time.monotonic() < deadline:
        time.sleep(0.01)
    return bytes(received).decode()
