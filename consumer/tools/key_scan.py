"""Walking a deployment's keys in chunks, for the maintenance tools (``state
repartition``, ``state recount``, the legacy layout's migration): a ``SCAN`` step and a
round trip of reads or writes per :data:`CHUNK` keys, so a million users never sit in
one command, nor in memory at once.

>>> [len(c) for c in chunks(range(2500))]
[1000, 1000, 500]
>>> text(b"ts:{ts:t:0}:u:u1"), text("u1")
('ts:{ts:t:0}:u:u1', 'u1')
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any, Final

__all__ = ["CHUNK", "chunks", "text"]

#: Users (or timers) per SCAN step and per round trip of reads and writes.
CHUNK: Final = 1000


def text(value: bytes | str) -> str:
    """A key or member as text."""
    return value.decode() if isinstance(value, bytes) else value


def chunks(items: Iterable[Any]) -> Iterator[list[Any]]:
    """``items`` in lists of :data:`CHUNK`."""
    it = iter(items)
    while chunk := list(islice(it, CHUNK)):
        yield chunk
