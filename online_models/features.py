"""Per-user features, updated in event time, O(1) per event.

Counts per event type and spend are kept as exponentially decayed sums at a few
half-lives, from a day to a year: ``v <- v * exp(-rate * dt) + x``. They need no
windows and an out-of-order event is still exact: all sums are referenced to the newest
event time seen (``last_ms``), and a late event at ``t < last_ms`` adds
``x * exp(-rate * (last_ms - t))``.
So the sums equal ``sum(x_i * exp(-rate * (last_ms - t_i)))`` whatever the arrival order.

>>> f = UserFeatures.new()
>>> DAY = 86_400_000
>>> f.apply(Event("e1", "u", "purchase", 0, 100.0))
>>> f.apply(Event("e2", "u", "page_view", 7 * DAY))
>>> round(f.spend[1], 6)      # 7-day half-life, one half-life later
50.0
>>> f.count("purchase", 1), f.count("page_view", 1)
(0.5, 1.0)
>>> f.apply(Event("e3", "u", "page_view", 0))   # late event, exact
>>> f.count("page_view", 1)
1.5
>>> f.last_ms == 7 * DAY, f.events, f.purchases
(True, 3, 1)

Besides the decayed sums, lifetime facts that sparse buyers are described by (what RFM
and BG/NBD live on): the first and last purchase times, the number of purchases, the
spend; and the product categories the user touched (``properties.category``), counted
in :data:`CATEGORY_BUCKETS` buckets by a stable hash of the name:

>>> f.apply(Event("e4", "u", "purchase", 9 * DAY, 20.0, category="books"))
>>> f.first_purchase_ms == 0, f.last_purchase_ms == 9 * DAY, sum(f.categories)
(True, True, 1.0)
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from itertools import chain
from typing import Any, Final

from online_models.event import (
    ADD_TO_CART_INDEX,
    EVENT_TYPES,
    PURCHASE_INDEX,
    REFUND_INDEX,
    Event,
)

DAY_MS: Final = 86_400_000
#: Half-lives of the decayed sums: a day (what is happening now), a week, a month, and a
#: year (the long horizon a customer who buys a few times a year is seen on).
HALF_LIVES_DAYS: Final = (1.0, 7.0, 30.0, 365.0)
#: Decay rate per millisecond for each half-life: ``ln 2 / half_life``.
RATES_PER_MS: Final = tuple(math.log(2.0) / (h * DAY_MS) for h in HALF_LIVES_DAYS)
#: ``-rate`` per half-life: a sum decays by ``exp(DECAY_RATES[h] * dt)`` over ``dt`` ms.
DECAY_RATES: Final = tuple(-rate for rate in RATES_PER_MS)
#: A gap longer than this (event time) between two events starts a new session.
SESSION_GAP_MS: Final = 30 * 60 * 1000
#: Product categories are counted in this many buckets (a stable hash of the name): a
#: user's state stays a fixed size whatever the catalogue, and the affinity features
#: (how concentrated, how broad) need no list of names.
CATEGORY_BUCKETS: Final = 16
_N_TYPES: Final = len(EVENT_TYPES)
_N_HALF_LIVES: Final = len(HALF_LIVES_DAYS)
#: The four rates by name (``UserFeatures._advance`` is written out for four half-lives).
_DECAY0, _DECAY1, _DECAY2, _DECAY3 = DECAY_RATES


def category_bucket(category: str) -> int:
    """The bucket of a category name: CRC-32 (the same in every process, unlike
    ``hash``) modulo :data:`CATEGORY_BUCKETS`.

    >>> category_bucket("books") == category_bucket("books"), 0 <= category_bucket("x") < 16
    (True, True)
    """
    return zlib.crc32(category.encode()) % CATEGORY_BUCKETS


def possible(
    floats: Sequence[float],
    counts: Sequence[int],
    first_purchase: int | None,
    last_purchase: int | None,
) -> bool:
    """Whether a feature block's values are ones some stream of events makes: its
    ``floats`` (counts and sums) and ``counts`` (events, purchases, refunds, carts) not
    below zero, its first purchase not after its last. :meth:`UserFeatures.impossible`
    says why not; the state codec checks the values it reads with it, before it builds
    the features.

    >>> possible([0.0, 2.5], (3, 1, 0, 0), 5, 9), possible([0.0, -1.0], (3, 1, 0, 0), 5, 9)
    (True, False)
    """
    if min(floats, default=0.0) < 0.0 or min(counts, default=0) < 0:
        return False
    return first_purchase is None or last_purchase is None or first_purchase <= last_purchase


class UserFeatures:
    """The event-time feature state of one user.

    Attributes:
        last_ms: newest event time seen; every decayed sum is referenced to it.
        first_ms: oldest event time seen (tenure starts there).
        last_purchase_ms: event time of the newest purchase, or None.
        first_purchase_ms: event time of the oldest purchase, or None.
        counts: ``counts[h][t]`` decayed count of event type ``t`` at half-life ``h``.
        spend: ``spend[h]`` decayed purchase amount at half-life ``h``.
        sessions: ``sessions[h]`` decayed count of sessions (a 30-minute gap starts one; a
            late event never does, so a session count may be one low after reordering).
        refunded: ``refunded[h]`` decayed refund amount at half-life ``h``.
        events, purchases, refunds, carts: lifetime counts.
        total_spend, total_refunded: lifetime amounts.
        categories: lifetime count of events per category bucket.
    """

    __slots__ = (
        "carts",
        "categories",
        "counts",
        "events",
        "first_ms",
        "first_purchase_ms",
        "last_ms",
        "last_purchase_ms",
        "purchases",
        "refunded",
        "refunds",
        "sessions",
        "spend",
        "total_refunded",
        "total_spend",
    )

    def __init__(
        self,
        *,
        last_ms: int,
        first_ms: int,
        last_purchase_ms: int | None,
        counts: list[list[float]],
        spend: list[float],
        refunded: list[float],
        sessions: list[float],
        events: int,
        purchases: int,
        refunds: int,
        carts: int,
        total_spend: float,
        total_refunded: float,
        first_purchase_ms: int | None = None,
        categories: list[float] | None = None,
    ) -> None:
        self.last_ms = last_ms
        self.first_ms = first_ms
        self.last_purchase_ms = last_purchase_ms
        self.counts = counts
        self.spend = spend
        self.refunded = refunded
        self.sessions = sessions
        self.events = events
        self.purchases = purchases
        self.refunds = refunds
        self.carts = carts
        self.total_spend = total_spend
        self.total_refunded = total_refunded
        self.first_purchase_ms = first_purchase_ms
        self.categories = categories if categories is not None else [0.0] * CATEGORY_BUCKETS

    @classmethod
    def new(cls) -> UserFeatures:
        """A user with no event yet."""
        return cls(
            last_ms=-1,
            first_ms=-1,
            last_purchase_ms=None,
            counts=[[0.0] * _N_TYPES for _ in range(_N_HALF_LIVES)],
            spend=[0.0] * _N_HALF_LIVES,
            refunded=[0.0] * _N_HALF_LIVES,
            sessions=[0.0] * _N_HALF_LIVES,
            events=0,
            purchases=0,
            refunds=0,
            carts=0,
            total_spend=0.0,
            total_refunded=0.0,
        )

    def apply(self, event: Event) -> None:
        """Fold one event in; exact whether it is the newest event or a late one."""
        t = event.timestamp_ms
        ti = event.type_index
        amount = event.amount
        if self.events and t < self.last_ms:
            self._fold_late(t, ti, amount)
        else:
            self._fold_newest(t, ti, amount)
        self.events += 1
        if ti == PURCHASE_INDEX:
            self._purchase(t, amount)
        elif ti == REFUND_INDEX:
            self.refunds += 1
            self.total_refunded += amount
        elif ti == ADD_TO_CART_INDEX:
            self.carts += 1
        if event.category is not None:
            self.categories[category_bucket(event.category)] += 1.0

    def _fold_newest(self, t: int, ti: int, amount: float) -> None:
        """The sums decayed to ``t``, then the event's weight, 1, at every half-life."""
        if self.events == 0:
            self.first_ms = self.last_ms = t
            self._new_session()
        elif t - self.last_ms > SESSION_GAP_MS:
            self._advance(t)
            self._new_session()
        elif t > self.last_ms:
            self._advance(t)
        for row in self.counts:
            row[ti] += 1.0
        if ti == PURCHASE_INDEX:
            spend = self.spend
            for h in range(_N_HALF_LIVES):
                spend[h] += amount
        elif ti == REFUND_INDEX:
            refunded = self.refunded
            for h in range(_N_HALF_LIVES):
                refunded[h] += amount

    def _fold_late(self, t: int, ti: int, amount: float) -> None:
        """An event older than ``last_ms``: weighed at each half-life by its age."""
        dt = self.last_ms - t
        self.first_ms = min(self.first_ms, t)
        for h, rate in enumerate(DECAY_RATES):
            w = math.exp(rate * dt)
            self.counts[h][ti] += w
            if ti == PURCHASE_INDEX:
                self.spend[h] += amount * w
            elif ti == REFUND_INDEX:
                self.refunded[h] += amount * w

    def _purchase(self, t: int, amount: float) -> None:
        self.purchases += 1
        self.total_spend += amount
        if self.last_purchase_ms is None or t > self.last_purchase_ms:
            self.last_purchase_ms = t
        if self.first_purchase_ms is None or t < self.first_purchase_ms:
            self.first_purchase_ms = t

    def _new_session(self) -> None:
        for h in range(_N_HALF_LIVES):
            self.sessions[h] += 1.0

    def _advance(self, t: int) -> None:
        # Every sum decayed from ``last_ms`` to ``t``; written out for the four
        # half-lives, since this runs for nearly every event.
        dt = t - self.last_ms
        exp = math.exp
        k0, k1, k2, k3 = exp(_DECAY0 * dt), exp(_DECAY1 * dt), exp(_DECAY2 * dt), exp(_DECAY3 * dt)
        counts = self.counts
        counts[0] = [v * k0 for v in counts[0]]
        counts[1] = [v * k1 for v in counts[1]]
        counts[2] = [v * k2 for v in counts[2]]
        counts[3] = [v * k3 for v in counts[3]]
        for sums in (self.spend, self.refunded, self.sessions):
            sums[0] *= k0
            sums[1] *= k1
            sums[2] *= k2
            sums[3] *= k3
        self.last_ms = t

    def count(self, event_type: str, half_life_index: int) -> float:
        """Decayed count of ``event_type`` at ``last_ms``."""
        return self.counts[half_life_index][EVENT_TYPES.index(event_type)]

    def decay_factor(self, now_ms: int, half_life_index: int) -> float:
        """How much the sums at ``half_life_index`` shrink from ``last_ms`` to ``now_ms``."""
        dt = max(0, now_ms - self.last_ms)
        return math.exp(DECAY_RATES[half_life_index] * dt)

    def impossible(self) -> str | None:
        """Why no stream of events could have made these features, or None: a count or
        a sum below zero (amounts are never negative), or a first purchase after the
        last. Such features come only from damaged or forged bytes, and would break the
        feature vector's logarithms.

        >>> f = UserFeatures.new()
        >>> f.impossible() is None
        True
        >>> f.spend[1] = -2.0
        >>> f.impossible()
        'spend holds -2.0, below 0'
        """
        floats = [*chain.from_iterable(self.counts), *self.spend, *self.refunded]
        floats += [*self.sessions, *self.categories, self.total_spend, self.total_refunded]
        counts = (self.events, self.purchases, self.refunds, self.carts)
        if possible(floats, counts, self.first_purchase_ms, self.last_purchase_ms):
            return None
        for name in ("events", "purchases", "refunds", "carts"):
            if getattr(self, name) < 0:
                return f"{name} is {getattr(self, name)}, below 0"
        for name in ("counts", "spend", "refunded", "sessions", "categories"):
            value = getattr(self, name)
            rows = value if name == "counts" else [value]
            low = min((min(row, default=0.0) for row in rows), default=0.0)
            if low < 0.0:
                return f"{name} holds {low!r}, below 0"
        for name in ("total_spend", "total_refunded"):
            if getattr(self, name) < 0.0:
                return f"{name} is {getattr(self, name)!r}, below 0"
        first, last = self.first_purchase_ms, self.last_purchase_ms
        if first is not None and last is not None and first > last:
            return f"first_purchase_ms {first} is after last_purchase_ms {last}"
        return None

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able form (floats round-trip exactly through orjson)."""
        return {
            "last_ms": self.last_ms,
            "first_ms": self.first_ms,
            "last_purchase_ms": self.last_purchase_ms,
            "counts": self.counts,
            "spend": self.spend,
            "refunded": self.refunded,
            "sessions": self.sessions,
            "events": self.events,
            "purchases": self.purchases,
            "refunds": self.refunds,
            "carts": self.carts,
            "total_spend": self.total_spend,
            "total_refunded": self.total_refunded,
            "first_purchase_ms": self.first_purchase_ms,
            "categories": self.categories,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UserFeatures:
        """Inverse of :meth:`to_json`. A state saved before the year-long half-life and
        the lifetime purchase facts existed is completed: its one-year sums start from
        its 30-day ones (they lack what decayed out of those), its first purchase is taken
        as its first event, and its categories as none.

        >>> old = UserFeatures.new().to_json()
        >>> for key in ("counts", "spend", "refunded", "sessions"):
        ...     old[key] = old[key][:3]
        >>> del old["first_purchase_ms"], old["categories"]
        >>> len(UserFeatures.from_json(old).counts)
        4
        """
        data = dict(data)
        if len(data["spend"]) < _N_HALF_LIVES:
            data["counts"] = [*data["counts"], list(data["counts"][-1])]
            for key in ("spend", "refunded", "sessions"):
                data[key] = [*data[key], data[key][-1]]
        if "first_purchase_ms" not in data:
            data["first_purchase_ms"] = data["first_ms"] if data["purchases"] else None
        return cls(**data)
