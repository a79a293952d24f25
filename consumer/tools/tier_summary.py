"""Per tier: how many users it holds, and how often its users convert, treated and held
out (the control group), what ``tierstream snapshot`` reports after its lines.

Conversion is the share of propensity snapshots taken while the user was in the tier that
a purchase followed within the label horizon (the labels the service resolved, counted per
partition with the states: :mod:`consumer.service.tier_counts`); uplift is the treated
conversion minus the control one, the effect of what a tier's campaign does. The users
per tier are the snapshot's own lines.

>>> from consumer.service.tier_counts import TierCounts, conversion_key
>>> counts = {conversion_key("vip", control=c, converted=b): n
...           for c, b, n in [(False, True, 30), (False, False, 70), (True, True, 2),
...                           (True, False, 8)]}
>>> summary = tier_summary({"vip": 40, "casual": 60}, counts, ["casual", "vip"])
>>> summary["users"], [t["tier"] for t in summary["tiers"]]
(100, ['casual', 'vip'])
>>> vip = summary["tiers"][1]
>>> vip["treated"], round(vip["uplift"], 3)
({'resolved': 100, 'converted': 30, 'conversion': 0.3}, 0.1)
>>> summary["tiers"][0]["control"], summary["tiers"][0]["uplift"]
({'resolved': 0, 'converted': 0, 'conversion': None}, None)
>>> print(summary_table(summary))
tier      users    treated: conversion (labels)    control: conversion (labels)     uplift
casual       60                           - (0)                           - (0)          -
vip          40                     30.0% (100)                      20.0% (10)   +10.0 pp
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from consumer.service.tier_counts import GROUPS, OUTCOMES, conversion_labels

__all__ = ["summary_table", "tier_summary"]


def tier_summary(
    users: Mapping[str, int], conversions: Mapping[str, int], tiers: Sequence[str]
) -> dict[str, Any]:
    """The summary of ``users`` per tier and the resolved labels ``conversions`` (by
    conversion key), in the order of ``tiers`` (lowest first), then any other tier
    found (one the config no longer has) by name."""
    resolved: dict[tuple[str, str], list[int]] = {}
    for key, n in conversions.items():
        tier, group, outcome = conversion_labels(key)
        both = resolved.setdefault((tier, group), [0, 0])
        both[0] += n
        both[1] += n if outcome == OUTCOMES[0] else 0
    found = set(users) | {tier for tier, _ in resolved}
    order = [t for t in tiers if t in found or t in users] + sorted(found - set(tiers))
    rows = []
    for tier in order:
        row: dict[str, Any] = {
            "tier": tier,
            "rank": tiers.index(tier) if tier in tiers else None,
            "users": users.get(tier, 0),
        }
        for group in GROUPS:
            n, bought = resolved.get((tier, group), [0, 0])
            rate = bought / n if n else None
            row[group] = {"resolved": n, "converted": bought, "conversion": rate}
        treated, control = row["treated"]["conversion"], row["control"]["conversion"]
        row["uplift"] = None if treated is None or control is None else treated - control
        rows.append(row)
    return {"users": sum(users.values()), "tiers": rows}


def summary_table(summary: Mapping[str, Any]) -> str:
    """The summary as a table for people."""

    def rate(group: Mapping[str, Any]) -> str:
        value = group["conversion"]
        shown = "-" if value is None else f"{value:.1%}"
        return f"{shown} ({group['resolved']:,})"

    width = max([4, *(len(row["tier"]) for row in summary["tiers"])])
    lines = [
        f"{'tier':<{width}}  {'users':>7}  {'treated: conversion (labels)':>30}  "
        f"{'control: conversion (labels)':>30}  {'uplift':>9}"
    ]
    for row in summary["tiers"]:
        uplift = "-" if row["uplift"] is None else f"{100 * row['uplift']:+.1f} pp"
        lines.append(
            f"{row['tier']:<{width}}  {row['users']:>7,}  {rate(row['treated']):>30}  "
            f"{rate(row['control']):>30}  {uplift:>9}"
        )
    return "\n".join(lines)
