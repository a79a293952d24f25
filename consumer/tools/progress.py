"""A one-line progress report on standard error for long runs.

On a terminal the line is redrawn at most every half second; otherwise (a log file, CI)
a line is written at most every ten seconds. :meth:`Progress.finish` always writes the
final line.

>>> import io
>>> out = io.StringIO()
>>> p = Progress(total=2000, stream=out, detail=lambda: "3 tier changes")
>>> p.finish(2000)
>>> out.getvalue().strip()
'2,000/2,000 records, ... records/s, 3 tier changes'
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """Counts records and reports the rate; ``fraction`` (share of the input read, for
    files of unknown length) and ``detail`` (any text) are asked for on each redraw."""

    def __init__(
        self,
        total: int | None = None,
        *,
        unit: str = "records",
        stream: TextIO | None = None,
        fraction: Callable[[], float | None] | None = None,
        detail: Callable[[], str] | None = None,
    ) -> None:
        self.total = total
        self.unit = unit
        self.stream = stream or sys.stderr
        self.fraction = fraction
        self.detail = detail
        self.tty = self.stream.isatty()
        self.every_s = 0.5 if self.tty else 10.0
        self.t0 = self.last = time.monotonic()
        self._finished: int | None = None

    def __call__(self, done: int) -> None:
        """Report ``done`` if it is time to; the final count ends the line."""
        if self.total is not None and done >= self.total:
            self.finish(done)
            return
        now = time.monotonic()
        if now - self.last < self.every_s:
            return
        self.last = now
        self._write(done, now, end="" if self.tty else "\n")

    def finish(self, done: int) -> None:
        """Write the final line (once per count)."""
        if self._finished == done:
            return
        self._finished = done
        self._write(done, time.monotonic(), end="\n")

    def clear(self) -> None:
        """Erase the progress line on a terminal (before a summary replaces it)."""
        if self.tty:
            print("\r\x1b[K", end="", file=self.stream, flush=True)

    def _write(self, done: int, now: float, end: str) -> None:
        rate = done / max(now - self.t0, 1e-9)
        text = f"{done:,}/{self.total:,}" if self.total is not None else f"{done:,}"
        text += f" {self.unit}, {rate:,.0f} {self.unit}/s"
        share = self.fraction() if self.fraction else None
        if share is not None and self.total is None:
            text += f", {share:.0%} of the input"
        if self.detail:
            text += f", {self.detail()}"
        prefix = "\r" if self.tty else ""
        pad = "\x1b[K" if self.tty else ""
        print(f"{prefix}  {text}{pad}", end=end, file=self.stream, flush=True)
