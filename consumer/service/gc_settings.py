"""The garbage collector's settings for a long run: what start-up built is frozen out of
the cyclic collector, and its generations are collected less often.

The per-event path makes no reference cycles (a replay of 60,000 new users leaves fewer than
800 objects to the cyclic collector in all), yet CPython's defaults (a young collection
every 700 allocations, the oldest generation every 100 of those) scanned the whole heap,
the modules, numpy, River and the model included, 29 times in that replay: 44 ms a pass,
1.7 s of its 12 s. Frozen (``gc.freeze``) the start-up objects are never scanned again,
and with a young generation of 50,000 objects the collector's share falls to 0.3 s:
docs/performance.md "The garbage collector". Objects are still freed by reference
counting the moment they are dropped; only garbage in cycles waits longer.

>>> import gc
>>> before = gc.get_threshold()
>>> settle_collector()
>>> gc.get_threshold() == THRESHOLDS, gc.get_freeze_count() > 0
(True, True)
>>> gc.unfreeze(); gc.set_threshold(*before)
"""

from __future__ import annotations

import gc
from typing import Final

__all__ = ["THRESHOLDS", "settle_collector"]

#: Young generation size, and how many collections of each generation make one of the next.
THRESHOLDS: Final = (50_000, 20, 100)


def settle_collector() -> None:
    """Call once start-up has built what lives for the whole run (the engine, the model,
    the clients), right before the run's loop: collect what start-up left, freeze the
    rest, and raise the thresholds (:data:`THRESHOLDS`)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
