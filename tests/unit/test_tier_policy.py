"""The tier policy: hysteresis holds users in place near a threshold, dwell time too."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from online_models.features import DAY_MS
from online_models.tier_policy import TierPolicy

CONFIG = {
    "hysteresis": 0.5,
    "tiers": [
        {"name": "dormant"},
        {"name": "casual", "min_score": 1.0},
        {"name": "engaged", "min_score": 4.0},
        {"name": "vip", "min_score": 9.0},
    ],
}
POLICY = TierPolicy.from_config(CONFIG)
scores = st.floats(min_value=-5, max_value=20, allow_nan=False)


@given(scores)
def test_first_tier_is_the_raw_tier(score: float) -> None:
    decision = POLICY.decide(None, score, since_ms=0, now_ms=0)
    assert decision is not None
    assert POLICY.rank(decision.tier) == POLICY.raw_tier(score)


@given(st.sampled_from(POLICY.names), scores)
def test_a_change_always_moves_and_agrees_with_the_raw_tier(tier: str, score: float) -> None:
    decision = POLICY.decide(tier, score, since_ms=0, now_ms=0)
    if decision is None:
        return
    assert decision.tier != tier
    raw = POLICY.raw_tier(score)
    if decision.direction == "up":
        assert POLICY.rank(tier) < POLICY.rank(decision.tier) <= raw
    else:
        assert raw <= POLICY.rank(decision.tier) < POLICY.rank(tier)


@given(st.sampled_from([1.0, 4.0, 9.0]), st.lists(st.floats(-0.49, 0.49), min_size=1))
def test_no_flapping_within_the_margin(threshold: float, wiggles: list[float]) -> None:
    tier = POLICY.tiers[POLICY.raw_tier(threshold)].name
    for w in wiggles:
        assert POLICY.decide(tier, threshold + w, since_ms=0, now_ms=0) is None


def test_dwell_time_holds_a_new_tier() -> None:
    policy = TierPolicy.from_config({**CONFIG, "min_dwell_days": 2})
    assert policy.decide("casual", 20.0, since_ms=0, now_ms=DAY_MS) is None
    decision = policy.decide("casual", 20.0, since_ms=0, now_ms=2 * DAY_MS)
    assert decision is not None and decision.tier == "vip"


def test_a_tier_missing_from_a_new_config_is_replaced() -> None:
    decision = POLICY.decide("platinum", 5.0, since_ms=0, now_ms=0)
    assert decision is not None and decision.tier == "engaged"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"tiers": []}, "non-empty list"),
        ({"tiers": [{"name": "a"}, {"name": "b"}]}, "numeric 'min_score'"),
        ({"tiers": [{"name": "a"}, {"name": "a", "min_score": 1}]}, "unique"),
        (
            {
                "tiers": [
                    {"name": "a"},
                    {"name": "b", "min_score": 2},
                    {"name": "c", "min_score": 1},
                ]
            },
            "increasing",
        ),
        ({"hysteresis": -1, "tiers": [{"name": "a"}]}, ">= 0"),
    ],
)
def test_bad_configs_say_what_is_wrong(config: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TierPolicy.from_config(config)


@pytest.mark.parametrize("trained", [False, True], ids=["version 0", "trained"])
def test_the_default_tiers_let_a_silent_user_fall_to_the_lowest_tier(
    trained: bool, request: pytest.FixtureRequest
) -> None:
    """A user who visited once and went silent scores below the lowest threshold less the
    margin, so the lowest tier stays reachable: a term that sits at a prior for everyone
    (as ``propensity_long`` does until its first long-horizon labels resolve) must not lift
    the score's floor above it."""
    from consumer.service.tier_config import DEFAULT_TIERS_FILE, load_engine
    from online_models.event import Event
    from online_models.user_state import UserState

    model = request.getfixturevalue("trained_model") if trained else None
    engine = load_engine(DEFAULT_TIERS_FILE, model=model)
    state = UserState.new()
    engine.apply(state, Event("e1", "u1", "page_view", 0), emitted_at_ms=0)
    floor = engine.policy.tiers[1].min_score - engine.policy.hysteresis
    score = engine.explain(state, 60 * DAY_MS)["scores"]["value_score"]
    assert score < floor, (score, floor)
