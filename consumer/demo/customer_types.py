"""The latent customer types the synthetic stream draws its users from: how often each
visits, what its sessions look like, what it buys and how it leaves.

>>> [p.name for p in PROFILES]
['whale', 'loyal', 'bargain_hunter', 'browser', 'churning']
>>> round(sum(p.share for p in PROFILES), 6)
1.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["PROFILES", "SEPARATED_PROFILES", "CustomerProfile"]


@dataclass(frozen=True)
class CustomerProfile:
    """Behaviour of one latent customer type. Rates are relative: the total number of
    events is fixed by :attr:`GeneratorConfig.events`, these only shape how it is shared
    and what the sessions look like."""

    name: str
    share: float  #: fraction of users of this type (normalised over all profiles)
    sessions_per_week: float  #: visit rate (times a per-user lognormal multiplier)
    session_events: float  #: mean events per session (lognormal, at least 1)
    p_search: float  #: a browsing step is a search
    p_product_view: float  #: a browsing step is a product view (else a page view)
    p_buy_intent: float  #: a session starts meaning to buy (x1.6 in December)
    p_add_to_cart: float  #: a product view in an intent session goes into the cart
    p_remove: float  #: with a non-empty cart, a step removes an item
    p_complete: float  #: a checkout in an intent session becomes a purchase
    price_mu: float  #: log of the median item price
    price_sigma: float  #: lognormal sigma of item prices
    tail_alpha: float  #: > 0: basket times Pareto(tail_alpha), a heavy tail
    refund_rate: float  #: fraction of purchases refunded later
    quiet_prob: float  #: probability of going quiet (stopping) at a random time
    churns: bool = False  #: visit rate fades linearly to 0 at a point mid-horizon


#: The default mix. Shares: 3% whales, 22% loyal, 22% bargain hunters, 38% browsers,
#: 15% churning. Churning is a copy of loyal with a fading rate.
PROFILES: tuple[CustomerProfile, ...] = (
    CustomerProfile(
        "whale", 0.03, 4.0, 12.0, 0.10, 0.55, 0.65, 0.60, 0.04, 0.95,
        math.log(90.0), 0.8, 1.6, 0.08, 0.05,
    ),
    CustomerProfile(
        "loyal", 0.22, 2.5, 9.0, 0.12, 0.50, 0.50, 0.50, 0.06, 0.90,
        math.log(40.0), 0.6, 0.0, 0.05, 0.08,
    ),
    CustomerProfile(
        "bargain_hunter", 0.22, 2.5, 14.0, 0.35, 0.45, 0.22, 0.40, 0.30, 0.60,
        math.log(14.0), 0.5, 0.0, 0.12, 0.12,
    ),
    CustomerProfile(
        "browser", 0.38, 1.2, 5.0, 0.20, 0.45, 0.04, 0.30, 0.15, 0.50,
        math.log(30.0), 0.7, 0.0, 0.06, 0.25,
    ),
    CustomerProfile(
        "churning", 0.15, 2.5, 9.0, 0.12, 0.50, 0.45, 0.50, 0.08, 0.85,
        math.log(38.0), 0.6, 0.0, 0.06, 0.0, churns=True,
    ),
)  # fmt: skip

#: Three kinds of customer far apart in the traits the segments are made of
#: (``online_models/segment_traits.py``: events a week, purchases a year, order value):
#: big spenders (frequent visits, most of them meant to buy, baskets around 400), browsers
#: (nearly as active, never meaning to buy) and occasional small buyers (a visit every ten
#: days or so, nearly each a purchase around 15). A stream of them must end with three
#: segments (``tests/unit/test_segments.py``, ``tierstream generate --types separated``).
SEPARATED_PROFILES: tuple[CustomerProfile, ...] = (
    CustomerProfile(
        "big_spender", 1 / 3, 4.0, 10.0, 0.10, 0.55, 0.70, 0.70, 0.04, 0.95,
        math.log(400.0), 0.3, 0.0, 0.0, 0.0,
    ),
    CustomerProfile(
        "browser", 1 / 3, 3.0, 8.0, 0.35, 0.45, 0.0, 0.30, 0.20, 0.50,
        math.log(30.0), 0.5, 0.0, 0.0, 0.0,
    ),
    CustomerProfile(
        "occasional_buyer", 1 / 3, 0.7, 8.0, 0.05, 0.70, 0.95, 0.90, 0.02, 0.98,
        math.log(15.0), 0.3, 0.0, 0.0, 0.0,
    ),
)  # fmt: skip
