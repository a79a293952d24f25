"""A deterministic synthetic order export: purchases only, few per customer, months apart,
heavy-tailed amounts (``tierstream generate --purchases-only``).

What an online shop's order history looks like, not its clickstream: each record is a
``purchase`` event (input schema v1) with an ``amount``, a ``currency``, an
``order_id`` and the order's product ``category`` in ``properties``. Customers are
acquired by their first order, at a uniformly drawn time in the first
:data:`ACQUISITION_SHARE` of the horizon, and then follow one of a few buying patterns
(:data:`ORDER_PROFILES`) that real order logs show and that the textbook models read
only in part:

* ``replenisher``: consumables (grocery, beauty) re-ordered on a cycle of their own
  (a median of 45 days, regular to about 20%), small baskets; stops with a small
  probability after each order.
* ``occasional``: buys now and then, as a Poisson process whose rate differs from
  customer to customer (gamma), and may drop out after any order: the pattern BG/NBD
  assumes.
* ``big_ticket``: one expensive first order (electronics, jewellery, furniture), rarely
  anything after: a large first basket says little about coming back.
* ``seasonal``: gift buyers, who order between mid-November and Christmas most years and
  rarely otherwise: silent for ten months, then back.
* ``vip``: frequent, large and heavy-tailed baskets, whose pace slowly fades.

Determinism: the same :class:`OrderConfig` gives byte-identical records; user types
depend only on the seed and the number of users.

>>> cfg = OrderConfig(users=50, seed=3)
>>> records = list(generate_orders(cfg))
>>> events = [orjson.loads(r.value) for r in records]
>>> {e["event_type"] for e in events}, len({e["user_id"] for e in events})
({'purchase'}, 50)
>>> all(e["amount"] > 0 and "category" in e["properties"] for e in events)
True
>>> records == list(generate_orders(cfg))
True
>>> sorted({t["type"] for t in order_truth(cfg)})
['big_ticket', 'occasional', 'replenisher', 'seasonal', 'vip']
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import orjson

from consumer.demo.synthetic import GeneratedRecord, _largest_remainder, _mix, _uuid

__all__ = ["ORDER_PROFILES", "OrderConfig", "OrderProfile", "generate_orders", "order_truth"]

_MS_DAY: Final = 86_400_000
#: Customers are acquired (their first order) in this first share of the horizon.
ACQUISITION_SHARE: Final = 0.8


@dataclass(frozen=True)
class OrderProfile:
    """How one type of customer orders."""

    name: str
    share: float
    categories: tuple[str, ...]
    #: Median days between orders (per customer: times a lognormal factor).
    gap_days: float
    #: True: orders on a cycle (the gap jittered by 20%); False: a Poisson process.
    regular: bool
    #: Probability of stopping for good after each order.
    dropout: float
    #: Median basket, lognormal sigma; a Pareto(alpha) multiplier on ``tail_share`` of
    #: the orders (0: none).
    basket: float
    basket_sigma: float
    tail_alpha: float = 0.0
    tail_share: float = 0.0
    #: The first order's basket is this many times larger.
    first_basket: float = 1.0
    #: Days over which the ordering pace halves (0: it does not fade).
    fade_days: float = 0.0
    #: Gift buyers: the probability of ordering in the season each year.
    seasonal: float = 0.0


#: The default mix of an order export.
ORDER_PROFILES: Final = (
    OrderProfile("replenisher", 0.25, ("grocery", "beauty"), 45.0, True, 0.06, 30.0, 0.5),
    OrderProfile(
        "occasional",
        0.35,
        ("books", "toys", "fashion", "sports", "kitchen", "music"),
        150.0,
        False,
        0.25,
        60.0,
        0.7,
    ),
    OrderProfile(
        "big_ticket",
        0.20,
        ("electronics", "jewelry", "furniture"),
        500.0,
        False,
        0.6,
        60.0,
        0.7,
        first_basket=6.0,
        tail_alpha=2.0,
        tail_share=0.5,
    ),
    OrderProfile(
        "seasonal", 0.12, ("toys", "jewelry", "books"), 365.0, False, 0.1, 80.0, 0.6, seasonal=0.8
    ),
    OrderProfile(
        "vip",
        0.08,
        ("fashion", "electronics", "beauty", "sports"),
        20.0,
        False,
        0.02,
        90.0,
        0.9,
        tail_alpha=1.8,
        tail_share=0.1,
        fade_days=400.0,
    ),
)
_CURRENCIES: Final = ("EUR", "USD", "GBP")


@dataclass(frozen=True)
class OrderConfig:
    """What to generate: ``users`` customers over ``days`` from ``start``."""

    users: int = 20_000
    seed: int = 42
    start: datetime = datetime(2025, 1, 1, tzinfo=UTC)
    days: int = 730
    profiles: tuple[OrderProfile, ...] = ORDER_PROFILES

    def __post_init__(self) -> None:
        if self.users < 1 or self.days < 1:
            raise ValueError("users and days must be >= 1")


def _types(config: OrderConfig) -> list[int]:
    rng = random.Random(_mix(config.seed, 101))
    counts = _largest_remainder([p.share for p in config.profiles], config.users)
    types = [i for i, c in enumerate(counts) for _ in range(c)]
    rng.shuffle(types)
    return types


def order_truth(config: OrderConfig) -> Iterator[dict[str, str]]:
    """The type of every customer, in user-id order."""
    for i, ti in enumerate(_types(config)):
        yield {"user_id": f"c{i:06d}", "type": config.profiles[ti].name}


def _in_season(t_ms: int) -> bool:
    d = datetime.fromtimestamp(t_ms / 1000, UTC)
    return (d.month == 11 and d.day >= 15) or (d.month == 12 and d.day <= 24)


def _season_times(rng: random.Random, start: int, end: int, chance: float) -> list[int]:
    """One or two orders between mid-November and Christmas of each year, with ``chance``."""
    out: list[int] = []
    year = datetime.fromtimestamp(start / 1000, UTC).year
    while True:
        season = int(datetime(year, 11, 15, tzinfo=UTC).timestamp() * 1000)
        if season > end:
            return out
        for _ in range(1 + (rng.random() < 0.3)):
            if rng.random() < chance:
                t = season + int(rng.random() * 39 * _MS_DAY)
                if start < t <= end:
                    out.append(t)
        year += 1


def _customer_times(p: OrderProfile, rng: random.Random, first: int, end: int) -> list[int]:
    """When one customer orders: the first order at ``first``, then the profile's pattern."""
    times = [first]
    gap = p.gap_days * _MS_DAY * rng.lognormvariate(0.0, 0.4)
    if not p.regular:
        gap *= rng.gammavariate(2.0, 0.5)  # customer-to-customer heterogeneity of the rate
    t = first
    while rng.random() >= p.dropout:
        pace = 2.0 ** ((t - first) / (p.fade_days * _MS_DAY)) if p.fade_days else 1.0
        if p.regular:
            t += int(gap * max(0.3, rng.gauss(1.0, 0.2)))
        else:
            t += int(rng.expovariate(1.0) * gap * pace)
        if t > end:
            break
        times.append(t)
    if p.seasonal:
        times += _season_times(rng, first, end, p.seasonal)
    return sorted(set(times))


def _amount(p: OrderProfile, rng: random.Random, first: bool) -> float:
    basket = rng.lognormvariate(math.log(p.basket), p.basket_sigma)
    if first:
        basket *= p.first_basket
    if p.tail_alpha and rng.random() < p.tail_share:
        basket *= rng.paretovariate(p.tail_alpha)
    return round(max(basket, 1.0), 2)


def generate_orders(config: OrderConfig) -> Iterator[GeneratedRecord]:
    """Every customer's orders, as input events in event-time order."""
    start = round(config.start.timestamp() * 1000)
    end = start + config.days * _MS_DAY
    orders: list[tuple[int, int, dict[str, object]]] = []
    for i, ti in enumerate(_types(config)):
        p = config.profiles[ti]
        rng = random.Random(_mix(config.seed, 102, i))
        if p.seasonal and rng.random() < 0.7:  # most gift buyers are acquired in a season
            first = _season_times(rng, start, start + int(ACQUISITION_SHARE * (end - start)), 1.0)
            arrive = first[rng.randrange(len(first))] if first else start
        else:
            arrive = start + int(rng.random() * ACQUISITION_SHARE * (end - start))
        currency = rng.choice(_CURRENCIES)
        user = f"c{i:06d}"
        for k, t in enumerate(_customer_times(p, rng, arrive, end)):
            body: dict[str, object] = {
                "event_id": _uuid(rng),
                "user_id": user,
                "event_type": "purchase",
                "timestamp": datetime.fromtimestamp(t // 1000, UTC)
                .isoformat(timespec="seconds")
                .replace("+00:00", "Z"),
                "amount": _amount(p, rng, k == 0),
                "currency": currency,
                "properties": {
                    "order_id": f"o{rng.getrandbits(48):012x}",
                    "category": rng.choice(p.categories),
                },
            }
            orders.append((t, i, body))
    orders.sort(key=lambda o: (o[0], o[1]))
    for _, i, body in orders:
        yield GeneratedRecord(f"c{i:06d}".encode(), orjson.dumps(body), None)
