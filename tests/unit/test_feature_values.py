"""The features' fold of an event, the feature vector and the value score's feature terms
equal their definitions to the bit, whatever the user's history and the time asked: they
run for every event, every scored event and every moment of the learning grid, so they
are written for speed (decay factors inlined and shared, the four half-lives written out,
categories counted without a generator), and a replay's bytes depend on every bit of
them."""

from __future__ import annotations

import math
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from online_models.buying_process import (
    BuyingPrior,
    expected_per_year,
    order_value_weight,
    p_alive,
)
from online_models.event import ADD_TO_CART_INDEX, EVENT_TYPES, PURCHASE_INDEX, Event
from online_models.feature_vector import FEATURE_NAMES, MAX_RECENCY_DAYS, vector
from online_models.features import (
    DAY_MS,
    DECAY_RATES,
    SESSION_GAP_MS,
    UserFeatures,
    category_bucket,
)
from online_models.global_model import GlobalModel
from online_models.scoring import FEATURES, ValueScorer

_CATEGORIES = ["shoes", "books", "garden", "toys", None]

history_st = st.lists(
    st.tuples(
        st.sampled_from(EVENT_TYPES[:-1]),
        st.integers(min_value=0, max_value=400 * DAY_MS),
        st.floats(min_value=0, max_value=1e5, allow_nan=False),
        st.sampled_from(_CATEGORIES),
    ),
    min_size=1,
    max_size=40,
)
#: How long after the last event the features are asked for (0: at it).
later_st = st.integers(min_value=0, max_value=800 * DAY_MS)


def features_of(raw: list[tuple[str, int, float, str | None]]) -> UserFeatures:
    f = UserFeatures.new()
    for i, (kind, ts, amount, category) in enumerate(raw):
        money = amount if kind in ("purchase", "refund") else 0.0
        f.apply(Event(f"e{i}", "u", kind, ts, money, category=category))
    return f


def defined_fold(raw: list[tuple[str, int, float, str | None]]) -> UserFeatures:
    """The features as docs/models.md defines the fold, one half-life at a time: an
    event newer than the last decays every sum to its time (each by ``exp(-rate * dt)``)
    and adds weight 1; a late one adds its weight ``exp(-rate * age)`` and decays
    nothing."""
    f = UserFeatures.new()
    for kind, ts, amount, category in raw:
        e = Event("e", "u", kind, ts, amount if kind in ("purchase", "refund") else 0.0)
        i, weights = e.type_index, [1.0] * len(DECAY_RATES)
        if f.events == 0:
            f.first_ms = f.last_ms = ts
            f.sessions = [s + 1.0 for s in f.sessions]
        elif ts >= f.last_ms:
            new_session = ts - f.last_ms > SESSION_GAP_MS
            for h, rate in enumerate(DECAY_RATES):
                k = math.exp(rate * (ts - f.last_ms))
                f.counts[h] = [v * k for v in f.counts[h]]
                f.spend[h] *= k
                f.refunded[h] *= k
                f.sessions[h] *= k
            f.last_ms = ts
            if new_session:
                f.sessions = [s + 1.0 for s in f.sessions]
        else:
            weights = [math.exp(rate * (f.last_ms - ts)) for rate in DECAY_RATES]
            f.first_ms = min(f.first_ms, ts)
        for h, w in enumerate(weights):
            f.counts[h][i] += w
            if kind == "purchase":
                f.spend[h] += e.amount * w
            elif kind == "refund":
                f.refunded[h] += e.amount * w
        f.events += 1
        if kind == "purchase":
            f.purchases += 1
            f.total_spend += e.amount
            last, first = f.last_purchase_ms, f.first_purchase_ms
            f.last_purchase_ms = ts if last is None else max(last, ts)
            f.first_purchase_ms = ts if first is None else min(first, ts)
        elif kind == "refund":
            f.refunds += 1
            f.total_refunded += e.amount
        elif kind == "add_to_cart":
            f.carts += 1
        if category is not None:
            f.categories[category_bucket(category)] += 1.0
    return f


def defined_vector(f: UserFeatures, now_ms: int) -> list[float]:
    """The vector as docs/models.md defines it, one feature at a time: every decay
    through :meth:`UserFeatures.decay_factor`."""
    log1p = math.log1p
    k = [f.decay_factor(now_ms, h) for h in range(4)]
    c = f.counts
    view, product_view = EVENT_TYPES.index("page_view"), EVENT_TYPES.index("product_view")
    search = EVENT_TYPES.index("search")
    since_event = min(max(0, now_ms - f.last_ms) / DAY_MS, MAX_RECENCY_DAYS)
    since_purchase = (
        MAX_RECENCY_DAYS
        if f.last_purchase_ms is None
        else min(max(0, now_ms - f.last_purchase_ms) / DAY_MS, MAX_RECENCY_DAYS)
    )
    aov = f.total_spend / f.purchases if f.purchases else 0.0
    first = span = gap = overdue = alive = per_year = 0.0
    if f.first_purchase_ms is not None and f.last_purchase_ms is not None:
        first = max(0, now_ms - f.first_purchase_ms) / DAY_MS
        span = (f.last_purchase_ms - f.first_purchase_ms) / DAY_MS
        if f.purchases > 1:
            gap = span / (f.purchases - 1)
            overdue = since_purchase / max(gap, 1.0)
        alive = p_alive(BuyingPrior(), f.purchases - 1, span, first)
        per_year = expected_per_year(BuyingPrior(), f.purchases - 1, span, first)
    touched = sum(f.categories)
    return [
        log1p(sum(c[0]) * k[0]),
        log1p(sum(c[1]) * k[1]),
        log1p(sum(c[2]) * k[2]),
        log1p((c[1][view] + c[1][product_view]) * k[1]),
        log1p(c[1][search] * k[1]),
        log1p(c[2][ADD_TO_CART_INDEX] * k[2]),
        log1p(c[2][PURCHASE_INDEX] * k[2]),
        log1p(f.spend[2] * k[2]),
        log1p(f.sessions[2] * k[2]),
        log1p(since_event),
        log1p(since_purchase),
        log1p(max(0, now_ms - f.first_ms) / DAY_MS),
        log1p(aov),
        max(0.0, 1.0 - f.purchases / f.carts) if f.carts else 0.0,
        min(1.0, f.total_refunded / f.total_spend) if f.total_spend > 0 else 0.0,
        log1p(sum(c[3]) * k[3]),
        log1p(c[3][PURCHASE_INDEX] * k[3]),
        log1p(f.spend[3] * k[3]),
        log1p(f.purchases),
        log1p(first),
        log1p(span),
        log1p(gap),
        log1p(overdue),
        0.0 if f.purchases else 1.0,
        max(f.categories) / touched if touched else 0.0,
        log1p(sum(1 for n in f.categories if n)),
        alive,
        log1p(per_year),
        order_value_weight(f.purchases - 1) * log1p(aov),
    ]


def bits(values: list[float]) -> bytes:
    """The values' bytes: equal only if every float is the same to the bit (and sign)."""
    return struct.pack(f"<{len(values)}d", *values)


@settings(max_examples=300, deadline=None)
@given(history_st)
def test_the_fold_is_its_definition_to_the_bit(
    raw: list[tuple[str, int, float, str | None]],
) -> None:
    got, defined = features_of(raw).to_json(), defined_fold(raw).to_json()
    assert got.keys() == defined.keys()
    for name, value in got.items():
        rows = value if name == "counts" else [value]
        want = defined[name] if name == "counts" else [defined[name]]
        if isinstance(value, list):
            assert [bits(r) for r in rows] == [bits(r) for r in want], name
        else:
            assert value == defined[name], name


@settings(max_examples=300, deadline=None)
@given(history_st, later_st)
def test_the_vector_is_its_definition_to_the_bit(
    raw: list[tuple[str, int, float, str | None]], later: int
) -> None:
    f = features_of(raw)
    for now in (f.last_ms, f.last_ms + later, f.last_ms - 1):  # a time before: no decay
        got = vector(f, now)
        assert len(got) == len(FEATURE_NAMES)
        assert bits(got) == bits(defined_vector(f, now)), now


@settings(max_examples=300, deadline=None)
@given(history_st, later_st)
def test_the_score_terms_are_each_feature_on_its_own_to_the_bit(
    raw: list[tuple[str, int, float, str | None]], later: int
) -> None:
    f = features_of(raw)
    weights = {name: 0.5 + i for i, name in enumerate(FEATURES)}
    scorer = ValueScorer(weights)
    for now in (f.last_ms, f.last_ms + later):
        total, parts = scorer.feature_parts(f, now)
        expected_total = 0.0
        for (name, value, c), (want, weight) in zip(parts, weights.items(), strict=True):
            assert name == want
            want_value = FEATURES[name](f, now)
            want_c = weight * math.log1p(want_value)
            assert bits([value, c]) == bits([want_value, want_c]), name
            expected_total += want_c
        assert bits([total]) == bits([expected_total])


def test_a_rows_propensity_is_its_first_prediction() -> None:
    model = GlobalModel.initial(FEATURE_NAMES)
    rows = model.score_rows([[0.1 * i + j for i in range(len(FEATURE_NAMES))] for j in range(5)])
    for i in range(5):
        assert rows.propensity(i) == rows.predictions(i)[0]


finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6)


@settings(max_examples=300, deadline=None)
@given(finite, st.floats(min_value=0.0, max_value=1.0), st.floats(min_value=0.0, max_value=1.0))
def test_the_score_of_the_propensity_alone_is_the_general_sum_to_the_bit(
    total: float, propensity: float, rank: float
) -> None:
    """A decision that needs only the propensity and the segment's rank sums them as
    :meth:`ValueScorer.value` sums every model term: the same number, so the same tier."""
    for weights in (
        {"propensity": 6.0, "spend_30d": 0.8},
        {"segment_rank": 0.7, "propensity": 6.0},
        {"propensity": 2.5, "segment_rank": -1.5, "activity_7d": 0.3},
    ):
        scorer = ValueScorer(weights)
        assert scorer.needs_only_propensity
        general = scorer.value(total, {"propensity": propensity, "segment_rank": rank})
        assert bits([scorer.value_with(total, propensity, rank)]) == bits([general])
    assert not ValueScorer({"propensity": 6.0, "churn_risk": -1.0}).needs_only_propensity
