"""The fixed-order numeric vector the models see, built from a user's features at an
event time.

Every entry is chosen to separate kinds of customers and is bounded or log-scaled, so
that one whale's spend does not stretch the scale for everyone (``log1p`` keeps zero at
zero and compresses the heavy tail). See ``docs/models.md`` for the reason behind each.

>>> from online_models.event import Event
>>> f = UserFeatures.new()
>>> f.apply(Event("e1", "u", "add_to_cart", 0))
>>> f.apply(Event("e2", "u", "purchase", 60_000, 99.0))
>>> v = vector(f, 60_000)
>>> len(v) == len(FEATURE_NAMES)
True
>>> round(v[FEATURE_NAMES.index("aov_log")], 3), v[FEATURE_NAMES.index("cart_abandon")]
(4.605, 0.0)
"""

from __future__ import annotations

import math
from typing import Final

from online_models.buying_process import (
    BuyingPrior,
    alive_and_per_year,
    order_value_weight,
)
from online_models.event import (
    ADD_TO_CART_INDEX,
    EVENT_TYPES,
    PURCHASE_INDEX,
)
from online_models.features import DAY_MS, DECAY_RATES, UserFeatures

__all__ = ["FEATURE_NAMES", "vector"]

#: Recency beyond two years says nothing more; never having bought counts as two years
#: (and ``never_purchased`` says so). Customers of an order export buy months apart, so a
#: year's cap would make a year's and eighteen months' silence look alike.
MAX_RECENCY_DAYS: Final = 730.0
_H1, _H7, _H30, _H365 = 0, 1, 2, 3
_VIEW = (EVENT_TYPES.index("page_view"), EVENT_TYPES.index("product_view"))
_SEARCH = EVENT_TYPES.index("search")
_PRIOR: Final = BuyingPrior()
_DECAY1, _DECAY7, _DECAY30, _DECAY365 = DECAY_RATES

FEATURE_NAMES: Final = (
    "activity_1d_log",
    "activity_7d_log",
    "activity_30d_log",
    "views_7d_log",
    "searches_7d_log",
    "carts_30d_log",
    "purchases_30d_log",
    "spend_30d_log",
    "sessions_30d_log",
    "days_since_event_log",
    "days_since_purchase_log",
    "tenure_days_log",
    "aov_log",
    "cart_abandon",
    "refund_ratio",
    "activity_365d_log",
    "purchases_365d_log",
    "spend_365d_log",
    "purchases_log",
    "first_purchase_days_log",
    "purchase_span_days_log",
    "interpurchase_days_log",
    "purchase_overdue_log",
    "never_purchased",
    "category_top_share",
    "categories_log",
    "p_alive",
    "expected_per_year_log",
    "aov_weighted_log",
)


def vector(f: UserFeatures, now_ms: int) -> list[float]:
    """The feature vector of ``f`` as of event time ``now_ms`` (>= the last event)."""
    # The sums' decay from the last event to ``now_ms``, per half-life, as
    # :meth:`UserFeatures.decay_factor` computes it (the same numbers), inlined: this
    # runs for every scored event and every moment of the learning grid.
    exp = math.exp
    dt = now_ms - f.last_ms
    if dt < 0:
        dt = 0
    k1 = exp(_DECAY1 * dt)
    k7 = exp(_DECAY7 * dt)
    k30 = exp(_DECAY30 * dt)
    k365 = exp(_DECAY365 * dt)
    counts = f.counts
    c7, c30, c365 = counts[_H7], counts[_H30], counts[_H365]
    log1p = math.log1p
    since_event = min(dt / DAY_MS, MAX_RECENCY_DAYS)
    purchases = f.purchases
    last_purchase = f.last_purchase_ms
    if last_purchase is None:
        since_purchase = MAX_RECENCY_DAYS
    else:
        since_purchase = min(max(0, now_ms - last_purchase) / DAY_MS, MAX_RECENCY_DAYS)
    tenure = max(0, now_ms - f.first_ms) / DAY_MS
    aov = f.total_spend / purchases if purchases else 0.0
    abandon = max(0.0, 1.0 - purchases / f.carts) if f.carts else 0.0
    refund_ratio = min(1.0, f.total_refunded / f.total_spend) if f.total_spend > 0 else 0.0
    first_purchase = span = gap = overdue = alive = per_year = 0.0
    if f.first_purchase_ms is not None and last_purchase is not None:
        first_purchase = max(0, now_ms - f.first_purchase_ms) / DAY_MS
        span = (last_purchase - f.first_purchase_ms) / DAY_MS
        if purchases > 1:
            gap = span / (purchases - 1)
            overdue = since_purchase / max(gap, 1.0)
        alive, per_year = alive_and_per_year(_PRIOR, purchases - 1, span, first_purchase)
    categories = f.categories
    touched = sum(categories)
    top_share = max(categories) / touched if touched else 0.0
    aov_log = log1p(aov)
    spend = f.spend
    return [
        log1p(sum(counts[_H1]) * k1),
        log1p(sum(c7) * k7),
        log1p(sum(c30) * k30),
        log1p((c7[_VIEW[0]] + c7[_VIEW[1]]) * k7),
        log1p(c7[_SEARCH] * k7),
        log1p(c30[ADD_TO_CART_INDEX] * k30),
        log1p(c30[PURCHASE_INDEX] * k30),
        log1p(spend[_H30] * k30),
        log1p(f.sessions[_H30] * k30),
        log1p(since_event),
        log1p(since_purchase),
        log1p(tenure),
        aov_log,
        abandon,
        refund_ratio,
        log1p(sum(c365) * k365),
        log1p(c365[PURCHASE_INDEX] * k365),
        log1p(spend[_H365] * k365),
        log1p(purchases),
        log1p(first_purchase),
        log1p(span),
        log1p(gap),
        log1p(overdue),
        0.0 if purchases else 1.0,
        top_share,
        # Categories touched: every bucket not zero (a count is never negative).
        log1p(len(categories) - categories.count(0.0)),
        alive,
        log1p(per_year),
        order_value_weight(purchases - 1) * aov_log,
    ]
