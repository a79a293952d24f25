"""Deterministic synthetic user-event stream (input schema v1) for tests, demos and load.

What it models, and why
-----------------------
Segmentation is only worth testing on data where the segments are *not* trivially
separable, so the generator draws every user from one of a few latent customer types
(:data:`PROFILES`) whose behaviour overlaps: a heavy ``loyal`` customer out-buys a light
``whale``, a busy ``browser`` looks like a ``bargain_hunter``, and a ``churning`` customer
behaves like a ``loyal`` one until their activity fades out and stops mid-horizon.
Within a type, users differ by a lognormal activity multiplier.

* **Arrivals and departures.** About 45% of users already exist at ``start`` (their first
  event is a login or a page view); the rest sign up (a ``signup`` event) at a uniformly
  drawn time in the first 85% of the horizon. Churners' visit rate falls linearly to zero
  at a random point; other users go quiet abruptly with a small per-type probability.
* **Sessions.** A user's visits are drawn from a non-homogeneous Poisson process over
  their active window (thinning), with local-time-of-day, weekday (weekends busier) and
  month-of-year (December bump, January sales, summer dip) factors in the user's own UTC
  offset. A session is a burst of events seconds to minutes apart (lognormal gaps) with
  its own ``session_id``; sessions are at least 20 minutes apart. (A user given more events
  than their window holds at that pace, e.g. ``users=10, events=10**6, days=7``, gets all
  gaps squeezed and millisecond timestamps only; their last events may still spill a
  little past the horizon's end.)
* **Funnel.** Browsing (page views, searches, product views) -> add to cart (sometimes
  remove) -> checkout -> purchase, or abandonment at any point. A session buys only if it
  starts with purchase intent (per-type, higher in December). Basket values are lognormal
  per item, and for whales also multiplied by a Pareto factor: heavy-tailed. A fraction of
  purchases is refunded 2 hours to 14 days later, for at most the purchase amount (refunds
  come from the back office: they carry no ``session_id``). About 0.2% of browsing steps are
  event types the service does not know (``wishlist_add``, ...), which are valid input.
* **Timestamps.** ~10% epoch milliseconds (JSON integer), the rest RFC 3339 with ``Z``,
  ``+00:00`` or the user's own offset (``+02:00``, ``-05:00``, ``+05:30``...), mostly with
  milliseconds, some to the second.
* **Delivery.** Records come out in event-time order, except that ~1% of the events are
  delivered late (2 s to 5 min after their timestamp, so after younger events) and ~0.2%
  are delivered twice (same ``event_id``, same bytes) up to 30 s later, as an
  at-least-once producer would.
* **Exact size.** Exactly ``events`` records come out. ``round(bad_fraction * events)``
  of them are malformed (see below), ``round(0.002 * rest)`` are duplicate deliveries and
  the remaining unique events are shared among users in proportion to their expected
  activity (each user gets at least one event when there are at least as many unique
  events as users; with fewer, a random subset of users gets one event each, and
  :func:`truth` still lists every user).
* **Malformed records.** Spread uniformly at random over the stream, their kinds taken
  round-robin over a per-seed permutation of :data:`BAD_REASONS`, so every kind appears
  once ``bad_fraction * events >= len(BAD_REASONS)``. Each one is malformed in exactly one
  way, as ``schemas/decode.py`` classifies it: ``not_json`` (valid UTF-8 but not JSON:
  truncated events, plain text, Python repr, trailing comma, two objects), ``not_object``
  (``[1,2]``, ``[]``, ``"hello"``, ``42``, ``3.5``, ``null``, ``true``, a list of one event),
  ``missing_field`` (one of the four required fields dropped), ``wrong_type`` (``user_id``
  or ``event_id`` a number, ``event_type`` a list, ``amount`` a string on a purchase,
  ``properties`` a string or list, ``session_id`` or ``currency`` a number; never the
  timestamp, whose errors are all ``bad_timestamp``), ``oversize`` (a valid event padded past
  ``max_record_bytes``), ``negative_amount`` (a purchase with a negative amount),
  ``bad_timestamp`` (``"yesterday"``, ``"2026-13-45T99:00:00Z"``, a date-time without
  offset, 30 February, a negative or year-3000+ epoch, a fractional epoch) and
  ``bad_encoding`` (a JSON event with a non-UTF-8 byte sequence such as Latin-1 ``0xE9``
  inside a string).

No value contains a newline byte, so every record is one JSONL line.

Determinism: the same :class:`GeneratorConfig` gives byte-identical output (on the same
Python minor version: only :mod:`random` and :mod:`orjson` are used, no hash-order or
clock dependence); another seed gives another stream. User types depend only on
``seed``, ``users`` and ``profiles``.

Memory and time: users are merged lazily in event-time order (a heap of one pending event
per *started* user; a user starts at their arrival), so memory is O(users + sessions),
never O(events). Measured on the 2-core dev machine (CPython 3.11.7, orjson 3.13.0)::

    cd /work/main && PYTHONPATH=. /usr/bin/time -v .venv/bin/python -c \\
        "from consumer.demo.synthetic import *; \\
        n = sum(len(r.value) for r in generate(GeneratorConfig(users=20_000, \\
        events=500_000, bad_fraction=0.01))); print(n)"

    500,000 records (149.6 MB, of which ~41 MB are the 625 oversize records)
    in 6.5 s wall, 76 MB max RSS; with bad_fraction=0: 107.6 MB in 6.4-7.6 s (runs vary
    with machine load), 76 MB max RSS.

Example:

>>> cfg = GeneratorConfig(users=3, events=8, seed=7, bad_fraction=0.25)
>>> records = list(generate(cfg))
>>> len(records), sum(r.bad_reason is not None for r in records)
(8, 2)
>>> good = [orjson.loads(r.value) for r in records if r.bad_reason is None]
>>> all({"event_id", "user_id", "event_type", "timestamp"} <= set(e) for e in good)
True
>>> {e["user_id"] for e in good} == {t["user_id"] for t in truth(cfg)}
True
>>> records == list(generate(cfg))
True
>>> next(truth(cfg))["user_id"]
'u000000'
"""

from __future__ import annotations

import functools
import heapq
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Final

import orjson

from consumer.demo.customer_types import PROFILES, CustomerProfile
from consumer.demo.malformed import BAD_REASONS, REQUIRED_FIELDS, corrupt
from online_models.event import KNOWN_EVENT_TYPES

__all__ = [
    "BAD_REASONS",
    "KNOWN_EVENT_TYPES",
    "PROFILES",
    "REQUIRED_FIELDS",
    "CustomerProfile",
    "GeneratedRecord",
    "GeneratorConfig",
    "generate",
    "truth",
]

LATE_FRACTION: Final = 0.01
DUPLICATE_FRACTION: Final = 0.002
UNKNOWN_TYPE_FRACTION: Final = 0.002
EPOCH_MS_FRACTION: Final = 0.10

_MS_HOUR: Final = 3_600_000
_MS_DAY: Final = 86_400_000
_MS_WEEK: Final = 7 * _MS_DAY
_MASK64: Final = (1 << 64) - 1


@dataclass(frozen=True)
class GeneratedRecord:
    """One record to produce: Kafka key and value, and why it is malformed (if it is)."""

    key: bytes | None  #: the user id as UTF-8 when known, else None
    value: bytes  #: the exact bytes to send / write as one JSONL line (no newline)
    bad_reason: str | None  #: None for a good event, else one of BAD_REASONS


@dataclass(frozen=True)
class GeneratorConfig:
    """What to generate. ``profiles`` is an addition to the agreed API (defaulted)."""

    users: int = 1000
    events: int = 50_000
    seed: int = 42
    start: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    days: int = 180
    bad_fraction: float = 0.0
    max_record_bytes: int = 65536
    profiles: tuple[CustomerProfile, ...] = field(default=PROFILES)

    def __post_init__(self) -> None:
        if self.users < 1:
            raise ValueError("users must be >= 1")
        if self.events < 0:
            raise ValueError("events must be >= 0")
        if self.days < 1:
            raise ValueError("days must be >= 1")
        if not 0.0 <= self.bad_fraction <= 1.0:
            raise ValueError("bad_fraction must be within [0, 1]")
        if self.start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        if self.max_record_bytes < 1024:
            raise ValueError("max_record_bytes must be >= 1024")
        if not self.profiles or sum(p.share for p in self.profiles) <= 0:
            raise ValueError("profiles need a positive total share")


# --------------------------------------------------------------------------- seasonality

# Local hour of day, Monday..Sunday, January..December.
_HOUR_W: Final = (
    0.35, 0.20, 0.12, 0.08, 0.07, 0.10, 0.25, 0.50, 0.75, 0.90, 1.00, 1.05,
    1.15, 1.10, 1.00, 1.00, 1.05, 1.15, 1.35, 1.60, 1.70, 1.55, 1.10, 0.60,
)  # fmt: skip
_WEEKDAY_W: Final = (0.95, 0.95, 0.95, 1.00, 1.05, 1.30, 1.35)
_MONTH_W: Final = (1.05, 0.95, 1.0, 1.0, 1.0, 0.95, 0.9, 0.9, 1.0, 1.05, 1.25, 1.6)
_MAX_RATE: Final = max(_HOUR_W) * max(_WEEKDAY_W) * max(_MONTH_W)

# UTC offsets of users (minutes) and their weights; currencies and their weights.
_OFFSETS: Final = (0, 60, 120, -300, -240, -480, 330, 540, 600)
_OFFSET_W: Final = (30, 30, 12, 8, 5, 4, 4, 4, 3)
_CURRENCIES: Final = ("EUR", "USD", "GBP", "SEK")
_CURRENCY_W: Final = (60, 25, 10, 5)

_CATEGORIES: Final = (
    "shoes", "electronics", "books", "toys", "garden", "beauty",
    "kitchen", "sports", "fashion", "grocery", "music", "jewelry",
)  # fmt: skip
_N_PRODUCTS: Final = 5000
_PAGES: Final = ("/", "/deals", "/new", "/help", "/account", "/stores", "/category")
_QUERIES: Final = (
    "running shoes", "usb-c cable", "café crème", "größe 42", "naïve art print", "東京 bag",
    "gift 🎁", "headphones", "lego", "garden hose", "sale", "winter jacket", "coffee",
)  # fmt: skip
_UNKNOWN_TYPES: Final = ("wishlist_add", "share", "newsletter_subscribe")
_LOGIN_METHODS: Final = ("password", "google", "apple", "magic_link")
_CHANNELS: Final = ("organic", "ads", "referral", "social")
_REFUND_REASONS: Final = ("damaged", "wrong_size", "changed_mind", "late_delivery")


@functools.cache
def _tz(offset_min: int) -> timezone:
    return UTC if offset_min == 0 else timezone(timedelta(minutes=offset_min))


@functools.lru_cache(maxsize=4096)
def _month_weight(day: int) -> float:
    """Month factor of the UTC day ``day`` (days since the epoch)."""
    return _MONTH_W[(datetime(1970, 1, 1) + timedelta(days=day)).month - 1]


def _rate(t_ms: int, offset_min: int) -> float:
    """Relative visit rate at ``t_ms`` for a user at UTC offset ``offset_min``."""
    local = t_ms + offset_min * 60_000
    day = local // _MS_DAY
    return (
        _HOUR_W[(local // _MS_HOUR) % 24]
        * _WEEKDAY_W[(day + 3) % 7]  # 1970-01-01 was a Thursday
        * _month_weight(day)
    )


# --------------------------------------------------------------------------- helpers


def _mix(*parts: int) -> int:
    """A 64-bit seed from integers (splitmix64 finaliser over each part)."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (p & _MASK64)) * 0xBF58476D1CE4E5B9 & _MASK64
        h = (h ^ (h >> 31)) * 0x94D049BB133111EB & _MASK64
        h ^= h >> 29
    return h


def _uuid(rng: random.Random) -> str:
    """A version-4-shaped UUID string drawn from ``rng`` (never uuid4: deterministic)."""
    b = rng.getrandbits(128)
    b = (b & ~(0xF << 76)) | (4 << 76)
    b = (b & ~(0x3 << 62)) | (0x2 << 62)
    h = f"{b:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _format_ts(t_ms: int, style: int, offset_min: int) -> str | int:
    """Style 0: epoch ms; 1/2: ms with Z/+00:00; 3: ms, local offset; 4: s, Z; 5: s, local."""
    if style == 0:
        return t_ms
    off = offset_min if style in (3, 5) else 0
    dt = datetime.fromtimestamp(t_ms // 1000, _tz(off))
    if style >= 4:
        text = dt.isoformat(timespec="seconds")
    else:
        text = dt.replace(microsecond=(t_ms % 1000) * 1000).isoformat(timespec="milliseconds")
    if style in (1, 4):
        text = text[:-6] + "Z"
    return text


def _ts_style(rng: random.Random, seconds: bool = True) -> int:
    """A timestamp style for :func:`_format_ts`; ``seconds=False``: millisecond ones only."""
    r = rng.random()
    if r < EPOCH_MS_FRACTION:
        return 0
    if r < 0.50:
        return 1
    if r < 0.65:
        return 2
    if r < 0.87:
        return 3
    if not seconds:
        return 1 if r < 0.95 else 3
    return 4 if r < 0.95 else 5


def _largest_remainder(weights: list[float], total: int) -> list[int]:
    """Integers proportional to ``weights`` summing to ``total`` (ties: lower index)."""
    wsum = sum(weights)
    quotas = [w / wsum * total for w in weights]
    out = [int(q) for q in quotas]
    left = total - sum(out)
    order = sorted(range(len(weights)), key=lambda i: (out[i] - quotas[i], i))
    for i in order[:left]:
        out[i] += 1
    return out


def _select(rng: random.Random, k: int, n: int) -> Iterator[bool]:
    """Exactly ``k`` of ``n`` flags True, uniformly at random, in O(1) memory (Knuth S)."""
    for i in range(n):
        if k and rng.random() * (n - i) < k:
            k -= 1
            yield True
        else:
            yield False


# --------------------------------------------------------------------------- users


@dataclass(slots=True)
class _User:
    idx: int
    user_id: str
    profile: CustomerProfile
    seed: int
    new: bool  # signs up inside the horizon
    arrive_ms: int
    leave_ms: int
    offset_min: int
    currency: str
    mult: float
    budget: int = 0


def _assign_types(config: GeneratorConfig, rng: random.Random) -> list[int]:
    """Profile index per user: exact shares (largest remainder), shuffled."""
    counts = _largest_remainder([p.share for p in config.profiles], config.users)
    types = [i for i, c in enumerate(counts) for _ in range(c)]
    rng.shuffle(types)
    return types


def _plan_users(config: GeneratorConfig) -> list[_User]:
    rng = random.Random(_mix(config.seed, 1))
    types = _assign_types(config, rng)
    start = round(config.start.timestamp() * 1000)
    end = start + config.days * _MS_DAY
    users: list[_User] = []
    for i, ti in enumerate(types):
        prof = config.profiles[ti]
        new = rng.random() >= 0.45
        arrive = start + int(rng.random() * 0.85 * (end - start)) if new else start
        leave = end
        if prof.churns:
            leave = arrive + int((0.3 + 0.45 * rng.random()) * (end - arrive))
        elif rng.random() < prof.quiet_prob:
            leave = arrive + int((0.2 + 0.7 * rng.random()) * (end - arrive))
        leave = max(leave, arrive + _MS_HOUR)
        users.append(
            _User(
                idx=i,
                user_id=f"u{i:06d}",
                profile=prof,
                seed=_mix(config.seed, 2, i),
                new=new,
                arrive_ms=arrive,
                leave_ms=leave,
                offset_min=rng.choices(_OFFSETS, _OFFSET_W)[0],
                currency=rng.choices(_CURRENCIES, _CURRENCY_W)[0],
                mult=rng.lognormvariate(0.0, 0.6),
            )
        )
    return users


def _expected_events(u: _User) -> float:
    p = u.profile
    weeks = (u.leave_ms - u.arrive_ms) / _MS_WEEK
    fade = 0.5 if p.churns else 1.0
    return p.sessions_per_week * u.mult * weeks * fade * p.session_events + (1.0 if u.new else 0.0)


def _set_budgets(users: list[_User], unique: int, rng: random.Random) -> None:
    n = len(users)
    if unique < n:
        for i in rng.sample(range(n), unique):
            users[i].budget = 1
        return
    extra = _largest_remainder([max(_expected_events(u), 1e-6) for u in users], unique - n)
    for u, x in zip(users, extra, strict=True):
        u.budget = 1 + x


# An event before serialisation: time, type, timestamp value, session, amount, props.
_Event = tuple[int, str, str | int, str | None, float | None, dict[str, object] | None]


class _UserStream:
    """Exactly ``user.budget`` events of one user, in time order (lazy, per session)."""

    def __init__(self, user: _User, end_ms: int) -> None:
        self.user = user
        self.end_ms = end_ms
        rng = random.Random(user.seed)
        prof = user.profile
        # Session sizes first (they fix how many sessions there are), then their times.
        lengths: list[int] = []
        left = user.budget
        mu = math.log(prof.session_events) - 0.18
        while left > 0:
            n = min(left, max(1, round(rng.lognormvariate(mu, 0.6))))
            lengths.append(n)
            left -= n
        times = self._session_times(rng, len(lengths) - (1 if user.new else 0))
        if user.new:
            times.insert(0, user.arrive_ms)
        self.sessions = list(zip(times, lengths, strict=True))
        self.fav = [rng.randrange(len(_CATEGORIES)) for _ in range(2)]
        self._n = 0  # tie-breaker for refunds at the same time
        # An event nominally takes ~150 s of a user's window (gaps within and between
        # sessions; 300 s allowed): busier users get all their gaps squeezed to fit.
        self.squeeze = min(1.0, (user.leave_ms - user.arrive_ms) / (user.budget * 300_000))

    def _session_times(self, rng: random.Random, n: int) -> list[int]:
        u = self.user
        a, b = u.arrive_ms, u.leave_ms
        span = b - a
        out: list[int] = []
        while len(out) < n:  # thinning of a non-homogeneous Poisson process
            t = a + int(rng.random() * span)
            r = _rate(t, u.offset_min)
            if u.profile.churns:
                r *= 1.0 - (t - a) / span
            if rng.random() * _MAX_RATE < r:
                out.append(t)
        out.sort()
        return out

    def __iter__(self) -> Iterator[_Event]:
        pending: list[tuple[int, int, _Event]] = []  # refunds: (time, seq, event)
        last = 0
        for k, (t0, length) in enumerate(self.sessions):
            start = max(t0, last + int(20 * 60_000 * self.squeeze)) if k else t0
            for ev in self._session(k, start, length, pending):
                while pending and pending[0][0] <= ev[0]:
                    yield heapq.heappop(pending)[2]
                yield ev
                last = ev[0]
        while pending:
            yield heapq.heappop(pending)[2]

    def _product(self, rng: random.Random) -> tuple[str, str]:
        pid = int(_N_PRODUCTS * rng.random() ** 2)  # popular products more often
        cat = self.fav[rng.getrandbits(1)] if rng.random() < 0.6 else pid % len(_CATEGORIES)
        pid = pid - pid % len(_CATEGORIES) + cat  # product ids are grouped by category
        return f"p{pid:05d}", _CATEGORIES[cat]

    def _session(  # noqa: C901 - one funnel state machine, clearer in one place
        self, k: int, start: int, length: int, pending: list[tuple[int, int, _Event]]
    ) -> Iterator[_Event]:
        user, prof = self.user, self.user.profile
        rng = random.Random(_mix(user.seed, 3, k))
        sid = f"s{rng.getrandbits(64):016x}"
        day = (start + user.offset_min * 60_000) // _MS_DAY
        december = _month_weight(day) > 1.5
        intent = rng.random() < min(0.95, prof.p_buy_intent * (1.6 if december else 1.0))
        cart: list[tuple[str, float]] = []
        viewed: tuple[str, str] | None = None
        last_type = ""
        t = start
        produced = 0
        while produced < length:
            props: dict[str, object] | None
            amount: float | None = None
            if produced == 0 and k == 0 and user.new:
                etype, props = "signup", {"channel": rng.choice(_CHANNELS)}
            elif produced == 0 and rng.random() < 0.25:
                etype, props = "login", {"method": rng.choice(_LOGIN_METHODS)}
            elif last_type == "checkout" and rng.random() < (
                prof.p_complete if intent else prof.p_complete * 0.4
            ):
                etype = "purchase"
                basket = sum(p for _, p in cart)
                if prof.tail_alpha > 0:
                    basket *= rng.paretovariate(prof.tail_alpha)
                amount = round(max(basket, 0.5), 2)
                order = f"o{rng.getrandbits(48):012x}"
                props = {"order_id": order, "items": len(cart), "product_ids": [p for p, _ in cart]}
                cart = []
                intent = rng.random() < 0.15
                if length - produced >= 2 and rng.random() < prof.refund_rate:
                    rt = t + int(2 * _MS_HOUR + rng.random() * 14 * _MS_DAY)
                    if rt < self.end_ms:
                        length -= 1  # the refund takes one of this session's slots
                        part = 1.0 if rng.random() < 0.6 else 0.1 + 0.9 * rng.random()
                        style = _ts_style(rng, self.squeeze == 1.0)
                        rt = -(-rt // 1000) * 1000 if style >= 4 else rt
                        refund: _Event = (
                            rt, "refund", _format_ts(rt, style, user.offset_min), None,
                            math.floor(amount * part * 100) / 100,
                            {"order_id": order, "reason": rng.choice(_REFUND_REASONS)},
                        )  # fmt: skip
                        self._n += 1
                        heapq.heappush(pending, (rt, self._n, refund))
            elif (
                cart
                and last_type != "checkout"
                and (
                    rng.random() < (0.5 if intent else 0.06) or (intent and length - produced <= 2)
                )
            ):
                etype = "checkout"
                props = {"items": len(cart), "cart_value": round(sum(p for _, p in cart), 2)}
            elif cart and rng.random() < prof.p_remove:
                pid, _ = cart.pop(rng.randrange(len(cart)))
                etype, props = "remove_from_cart", {"product_id": pid}
            elif (
                viewed is not None
                and last_type == "product_view"
                and rng.random() < (prof.p_add_to_cart if intent else prof.p_add_to_cart * 0.1)
            ):
                price = round(rng.lognormvariate(prof.price_mu, prof.price_sigma), 2)
                cart.append((viewed[0], price))
                etype = "add_to_cart"
                props = {"product_id": viewed[0], "category": viewed[1], "price": price}
            else:
                r = rng.random()
                if r < UNKNOWN_TYPE_FRACTION:
                    etype = rng.choice(_UNKNOWN_TYPES)
                    props = {"product_id": self._product(rng)[0]}
                elif r < prof.p_search:
                    etype, props = "search", {"query": rng.choice(_QUERIES)}
                elif r < prof.p_search + (
                    max(prof.p_product_view, 0.65 - prof.p_search)
                    if intent
                    else prof.p_product_view
                ):
                    viewed = self._product(rng)
                    etype = "product_view"
                    props = {"product_id": viewed[0], "category": viewed[1]}
                else:
                    page = rng.choice(_PAGES)
                    if page == "/category":
                        page += "/" + _CATEGORIES[self.fav[0]]
                    etype = "page_view"
                    props = {"page": page} if rng.random() < 0.95 else None
            style = _ts_style(rng, self.squeeze == 1.0)
            if style >= 4:  # second precision: round up so time never goes backwards
                t = -(-t // 1000) * 1000
            yield (t, etype, _format_ts(t, style, user.offset_min), sid, amount, props)
            produced += 1
            last_type = etype
            gap = rng.lognormvariate(math.log(5_000 if etype == "checkout" else 20_000), 1.0)
            t += max(1, int(min(600_000, max(500, gap)) * self.squeeze))


def _merged(users: list[_User], end_ms: int) -> Iterator[tuple[_User, _Event]]:
    """All users' events in (time, user index) order; users start lazily at arrival."""
    starts = sorted((u for u in users if u.budget > 0), key=lambda u: (u.arrive_ms, u.idx))
    heap: list[tuple[int, int, _Event, Iterator[_Event], _User]] = []
    si = 0
    while heap or si < len(starts):
        while si < len(starts) and (not heap or starts[si].arrive_ms <= heap[0][0]):
            u = starts[si]
            si += 1
            it = iter(_UserStream(u, end_ms))
            ev = next(it)
            heapq.heappush(heap, (ev[0], u.idx, ev, it, u))
        _t, idx, ev, it, u = heap[0]
        yield u, ev
        nxt = next(it, None)
        if nxt is None:
            heapq.heappop(heap)
        else:
            heapq.heapreplace(heap, (nxt[0], idx, nxt, it, u))


# --------------------------------------------------------------------------- good stream


def _event_dict(event_id: str, user: _User, ev: _Event) -> dict[str, object]:
    _, etype, ts, sid, amount, props = ev
    d: dict[str, object] = {
        "event_id": event_id,
        "user_id": user.user_id,
        "event_type": etype,
        "timestamp": ts,
    }
    if sid is not None:
        d["session_id"] = sid
    if amount is not None:
        d["amount"] = amount
        d["currency"] = user.currency
    if props is not None:
        d["properties"] = props
    return d


def _good_stream(
    users: list[_User], unique: int, n_dup: int, seed: int, end_ms: int
) -> Iterator[tuple[GeneratedRecord, dict[str, object]]]:
    """``unique`` events plus ``n_dup`` duplicate deliveries, some delivered late."""
    rng = random.Random(_mix(seed, 4))
    late = _select(random.Random(_mix(seed, 5)), round(LATE_FRACTION * unique), unique)
    dups = _select(random.Random(_mix(seed, 6)), n_dup, unique)
    # Held-back deliveries: (release time, seq, record, event, duplicate it on release?).
    held: list[tuple[int, int, GeneratedRecord, dict[str, object], bool]] = []
    seq = 0
    now = 0
    for user, ev in _merged(users, end_ms):
        now = ev[0]
        while held and held[0][0] <= now:
            rel, _, rec, d, dup = heapq.heappop(held)
            yield rec, d
            if dup:
                seq += 1
                heapq.heappush(held, (rel + 200 + rng.randrange(30_000), seq, rec, d, False))
        d = _event_dict(_uuid(rng), user, ev)
        rec = GeneratedRecord(user.user_id.encode(), orjson.dumps(d), None)
        is_late, is_dup = next(late), next(dups)
        if is_late:
            seq += 1
            delay = int(math.exp(math.log(2_000) + rng.random() * math.log(150)))  # 2 s-5 min
            heapq.heappush(held, (now + delay, seq, rec, d, is_dup))
            continue
        yield rec, d
        if is_dup:
            seq += 1
            heapq.heappush(held, (now + 200 + rng.randrange(30_000), seq, rec, d, False))
    while held:
        rel, _, rec, d, dup = heapq.heappop(held)
        yield rec, d
        if dup:
            seq += 1
            heapq.heappush(held, (rel + 200 + rng.randrange(30_000), seq, rec, d, False))


# --------------------------------------------------------------------------- public API


def truth(config: GeneratorConfig) -> Iterator[dict[str, str]]:
    """The latent type of every user, in user-id order: ``{"user_id": ..., "type": ...}``.

    >>> [t["type"] for t in truth(GeneratorConfig(users=4, seed=1))]
    ['bargain_hunter', 'browser', 'churning', 'loyal']
    """
    rng = random.Random(_mix(config.seed, 1))
    for i, ti in enumerate(_assign_types(config, rng)):
        yield {"user_id": f"u{i:06d}", "type": config.profiles[ti].name}


def generate(config: GeneratorConfig) -> Iterator[GeneratedRecord]:
    """Exactly ``config.events`` records: the event stream with malformed records mixed in."""
    total = config.events
    n_bad = min(total, round(config.bad_fraction * total))
    n_good = total - n_bad
    n_dup = round(DUPLICATE_FRACTION * n_good)
    n_unique = n_good - n_dup
    users = _plan_users(config)
    _set_budgets(users, n_unique, random.Random(_mix(config.seed, 7)))
    start_ms = round(config.start.timestamp() * 1000)
    end_ms = start_ms + config.days * _MS_DAY

    good = _good_stream(users, n_unique, n_dup, config.seed, end_ms)
    bad_rng = random.Random(_mix(config.seed, 8))
    kinds = list(BAD_REASONS)
    bad_rng.shuffle(kinds)
    tpl: dict[str, object] = {
        "event_id": "",
        "user_id": users[0].user_id,
        "event_type": "page_view",
        "timestamp": _format_ts(start_ms, 1, 0),
        "session_id": f"s{bad_rng.getrandbits(64):016x}",
        "properties": {"page": "/"},
    }
    n_bad_done = 0
    for is_bad in _select(bad_rng, n_bad, total):
        if is_bad:
            reason = kinds[n_bad_done % len(kinds)]
            n_bad_done += 1
            d = dict(tpl)
            d["event_id"] = _uuid(bad_rng)
            key, value = corrupt(reason, bad_rng, d, config.max_record_bytes)
            yield GeneratedRecord(key, value, reason)
        else:
            rec, tpl = next(good)
            yield rec
