"""BG/NBD's closed forms under fixed priors behave as the model says they must, and the
feature vector carries them exactly."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from online_models.buying_process import (
    BuyingPrior,
    expected_per_year,
    order_value_weight,
    p_alive,
)
from online_models.event import Event
from online_models.feature_vector import FEATURE_NAMES, vector
from online_models.features import DAY_MS, UserFeatures

PRIOR = BuyingPrior()
repeats = st.integers(1, 200)
days = st.floats(0.0, 3000.0, allow_nan=False)


@given(repeats, days, days, st.floats(1.0, 500.0))
def test_longer_silence_means_less_likely_alive(
    x: int, t_x: float, age: float, more: float
) -> None:
    t_x = min(t_x, age)
    now, later = p_alive(PRIOR, x, t_x, age), p_alive(PRIOR, x, t_x, age + more)
    assert 0.0 <= later <= now <= 1.0


@given(repeats, days, days)
def test_more_purchases_in_the_same_span_mean_a_higher_rate(x: int, t_x: float, age: float) -> None:
    t_x = min(t_x, age)
    alive_rate = (PRIOR.r + x) / (PRIOR.alpha_days + age)
    assert (PRIOR.r + x + 1) / (PRIOR.alpha_days + age) > alive_rate
    assert 0.0 <= expected_per_year(PRIOR, x, t_x, age) <= 365.0 * alive_rate + 1e-9


def test_a_customer_who_never_bought_again_is_alive_and_slows_with_age() -> None:
    assert p_alive(PRIOR, 0, 0.0, 1000.0) == 1.0
    assert expected_per_year(PRIOR, 0, 0.0, 30.0) > expected_per_year(PRIOR, 0, 0.0, 300.0)
    assert order_value_weight(0) == 0.0 < order_value_weight(1) < order_value_weight(9) < 1.0


def test_the_vector_carries_the_closed_forms_of_the_users_purchases() -> None:
    f = UserFeatures.new()
    for i, day in enumerate((0, 40, 90, 100)):
        f.apply(Event(f"e{i}", "u", "purchase", day * DAY_MS, 50.0 * (i + 1)))
    now = 130 * DAY_MS
    v = dict(zip(FEATURE_NAMES, vector(f, now), strict=True))
    assert v["p_alive"] == p_alive(PRIOR, 3, 100.0, 130.0)
    assert v["expected_per_year_log"] == math.log1p(expected_per_year(PRIOR, 3, 100.0, 130.0))
    assert v["aov_weighted_log"] == order_value_weight(3) * math.log1p(125.0)
    browser = UserFeatures.new()
    browser.apply(Event("b", "u", "page_view", 0))
    w = dict(zip(FEATURE_NAMES, vector(browser, now), strict=True))
    assert (w["p_alive"], w["expected_per_year_log"], w["aov_weighted_log"]) == (0.0, 0.0, 0.0)
