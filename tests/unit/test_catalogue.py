"""The tier catalogue, the control group and the tier-change schema's compatibility
(issue 10): what a tier means travels with every change; a fixed share of users is held
out; v3 only adds to v2."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest

from consumer.service.errors import SettingsError
from consumer.service.records import InputRecord
from consumer.service.tier_config import DEFAULT_TIERS_FILE, load_engine
from consumer.tools.replay import replay
from online_models.control_group import ControlGroup
from schemas import load, validator


def _with(tmp_path: Path, old: str, new: str) -> Path:
    path = tmp_path / "tiers.toml"
    text = DEFAULT_TIERS_FILE.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return path


def test_every_change_carries_its_tiers_catalogue_entry() -> None:
    engine = load_engine(DEFAULT_TIERS_FILE, frozen=True)
    records = [
        InputRecord("in", 0, i, None, f"u{i % 7}".encode(), orjson.dumps(body))
        for i, body in enumerate(
            {
                "event_id": f"e{i}",
                "user_id": f"u{i % 7}",
                "event_type": "purchase",
                "timestamp": 1_767_225_600_000 + i * 3_600_000,
                "amount": 10.0 * (i % 7) ** 3,
            }
            for i in range(140)
        )
    ]
    outputs, _ = replay(records, engine)
    changes = [orjson.loads(o.value or b"") for o in outputs if o.topic == "user-tier-changes"]
    assert len({c["tier"] for c in changes}) >= 3
    check = validator("tier-change.v4")
    for c in changes:
        check.validate(c)
        entry = engine.policy.tier(c["tier"])
        assert (c["tier_rank"], c["tier_label"], c["tier_attributes"]) == (
            entry.rank,
            entry.label,
            dict(entry.attributes),
        )
        previous = c["previous_tier"]
        assert c["previous_tier_rank"] == (previous and engine.policy.rank(previous))
        assert c["control"] == engine.control.holds(c["user_id"])
    vip = engine.policy.tier("vip")
    assert vip.label == "VIP" and "early_access" in vip.attributes["actions"]


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('label = "VIP"', "label = 4", "'label' must be a string"),
        ('label = "VIP"', 'lable = "VIP"', "unknown key 'lable'"),
        ("share = 0.05", "share = 5", "control share must be between 0 and 1"),
        ("share = 0.05", 'share = "5%"', "[control] share must be a number"),
        ("[control]", "[control]\nratio = 1", "unknown [control] key(s) ['ratio']"),
    ],
)
def test_a_bad_catalogue_or_control_table_is_named_at_start(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    with pytest.raises(SettingsError) as err:
        load_engine(_with(tmp_path, old, new))
    assert message in str(err.value)


def test_the_control_share_holds_over_100k_users_and_never_moves_a_user() -> None:
    group = ControlGroup(0.05, "tierstream-control-1")
    users = [f"user-{i:06d}" for i in range(100_000)]
    held = [u for u in users if group.holds(u)]
    assert abs(len(held) / len(users) - 0.05) < 0.005
    # another instance, another process, a restart: a pure function of id and salt
    again = ControlGroup(0.05, "tierstream-control-1")
    assert all(again.holds(u) for u in held)
    # a larger share keeps everyone already held out (the draw is a threshold)
    assert all(ControlGroup(0.10, "tierstream-control-1").holds(u) for u in held)
    # a new salt draws a new group
    other = {u for u in users if ControlGroup(0.05, "another-salt").holds(u)}
    assert len(other & set(held)) < 0.1 * len(held)


def test_tier_change_v3_only_adds_to_v2() -> None:
    """Additive: v3 keeps every v2 property as it was (but the version number) and
    requires nothing new, so code written for v3 reads a v2 message (the new fields
    absent), a v2 reader ignores the new fields (additionalProperties), and a v3 message
    minus the new fields, stamped v2, is a valid v2 message."""
    v2, v3 = load("tier-change.v2"), load("tier-change.v3")
    assert v3["required"] == v2["required"]
    added = set(v3["properties"]) - set(v2["properties"])
    assert added == {"tier_rank", "previous_tier_rank", "tier_label", "tier_attributes", "control"}
    for name, spec in v2["properties"].items():
        if name != "schema_version":
            assert v3["properties"][name] == spec, name
    assert v3.get("additionalProperties", True) is not False

    change = _first_change(amount=500.0)
    change["schema_version"] = 3  # what v3 carried: v4 adds nothing a v3 reader refuses
    validator("tier-change.v3").validate(change)
    as_v2 = {k: v for k, v in copy.deepcopy(change).items() if k not in added}
    as_v2["schema_version"] = 2
    validator("tier-change.v2").validate(as_v2)
    assert set(change) - set(as_v2) == added


def test_resolved_labels_carry_the_snapshot_tier_and_the_control_flag() -> None:
    """A purchase that makes a label positive may also lift the user's tier: the
    conversion counts for the tier the user was in at the snapshot, not the new one (the
    label resolves when its horizon has passed)."""
    from online_models.event import Event
    from online_models.user_state import UserState

    engine = load_engine(DEFAULT_TIERS_FILE, frozen=True)
    state = UserState.new()
    day = 86_400_000
    t0 = 1_767_225_600_000
    engine.apply(state, Event("e1", "u1", "page_view", t0), emitted_at_ms=t0)
    tier_then = state.tier
    later = t0 + 20 * day  # past the dwell time, within the label horizon
    engine.apply(state, Event("e2", "u1", "purchase", later, amount=900.0), emitted_at_ms=t0)
    assert state.tier != tier_then  # the purchase moved the user up; the label counts below
    assert engine.models.take_resolved() == []
    engine.fire(state, "u1", t0 + 31 * day, emitted_at_ms=t0)
    (resolved,) = engine.models.take_resolved()
    assert resolved.label is True and resolved.tier == tier_then
    assert resolved.control == engine.control.holds("u1")


def test_tier_change_v4_only_adds_to_v3() -> None:
    """Additive: v4 names the scores a change carries (the heads' outputs among them),
    which v3 already accepted as further numbers; every other property is unchanged and
    nothing new is required."""
    v3, v4 = load("tier-change.v3"), load("tier-change.v4")
    assert v4["required"] == v3["required"]
    assert set(v4["properties"]) == set(v3["properties"])
    for name, spec in v3["properties"].items():
        if name not in ("schema_version", "scores"):
            assert v4["properties"][name] == spec, name
    old, new = v3["properties"]["scores"], v4["properties"]["scores"]
    assert new["additionalProperties"] == old["additionalProperties"]
    assert new["properties"]["value_score"] == old["properties"]["value_score"]
    assert {"propensity_long", "churn_risk", "expected_purchases", "expected_value"} <= set(
        new["properties"]
    )
    change = _first_change(amount=50.0)
    validator("tier-change.v4").validate(change)
    assert change["schema_version"] == 4
    assert {"propensity_long", "churn_risk", "expected_value"} <= set(change["scores"])


def _first_change(*, amount: float) -> dict[str, Any]:
    """The tier change of a new user's first event, a purchase of ``amount``, as the
    default tier config publishes it."""
    engine = load_engine(DEFAULT_TIERS_FILE, frozen=True)
    body = {
        "event_id": "e1",
        "user_id": "u1",
        "event_type": "purchase",
        "timestamp": 1_767_225_600_000,
        "amount": amount,
    }
    outputs, _ = replay([InputRecord("in", 0, 0, None, b"u1", orjson.dumps(body))], engine)
    change: dict[str, Any] = orjson.loads(outputs[0].value or b"")
    return change
