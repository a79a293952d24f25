"""``tierstream inspect``: one user's tier and why, for a person to read.

Built from :meth:`TierEngine.explain`; the ``--json`` form is that explanation with the
user id and readable times added.

>>> from consumer.service.tier_config import DEFAULT_TIERS_FILE, load_engine
>>> from online_models.event import Event
>>> from online_models.user_state import UserState
>>> engine = load_engine(DEFAULT_TIERS_FILE)
>>> state = UserState.new()
>>> _ = engine.apply(state, Event("e1", "u1", "purchase", 0, 50.0), emitted_at_ms=0)
>>> print(render("u1", engine.explain(state)))  # doctest: +ELLIPSIS
user u1
  tier        ... since 1970-01-01 00:00:00 UTC (tier change #1)
  as of       1970-01-01 00:00:00 UTC (the newest event time of the user's state)
  value score ...
...
  features    1 events, 1 purchases (50.00 spent), 0 refunds (0.00), 0 carts
              first event 1970-01-01 00:00:00 UTC, last event 1970-01-01 00:00:00 UTC, ...
"""

from __future__ import annotations

from typing import Any

from online_models.timefmt import iso_utc_ms

__all__ = ["as_json", "render"]

#: How many contributions the readable view lists.
TOP = 5


def _when(ms: int | None) -> str:
    if ms is None or ms < 0:
        return "never"
    return iso_utc_ms(ms)[:19].replace("T", " ") + " UTC"


def as_json(user_id: str, view: dict[str, Any]) -> dict[str, Any]:
    """The explanation as a JSON document, with RFC 3339 times beside the epoch ones."""
    return {
        "user_id": user_id,
        **view,
        "as_of": iso_utc_ms(view["as_of_ms"]),
        "tier_since": iso_utc_ms(view["tier_since_ms"]) if view["tier_since_ms"] >= 0 else None,
    }


def render(user_id: str, view: dict[str, Any], *, as_of_given: bool = False) -> str:
    """A readable multi-line view of what :meth:`TierEngine.explain` said."""
    f = view["features"]
    scores = view["scores"]
    lines = [f"user {user_id}"]
    lines.append(
        f"  tier        {view['tier']} since {_when(view['tier_since_ms'])} "
        f"(tier change #{view['seq']})"
    )
    why_time = "" if as_of_given else " (the newest event time of the user's state)"
    lines.append(f"  as of       {_when(view['as_of_ms'])}{why_time}")
    value = scores.get("value_score")
    score_line = (
        f"  value score {value:.3f}" if isinstance(value, float | int) else "  value score -"
    )
    if view.get("score_tier") and view["score_tier"] != view["tier"]:
        score_line += f" (the score alone would now give {view['score_tier']})"
    lines.append(score_line)
    others = [
        f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
        for k, v in scores.items()
        if k != "value_score" and v is not None
    ]
    if others:
        lines.append(f"  model says  {', '.join(others)}")
    lines.append("  why         (largest contributions to the value score: feature, value, part)")
    for c in view["contributions"][:TOP]:
        lines.append(f"    {c['feature']:<18} {c['value']:>12,.3f} {c['contribution']:>+9.3f}")
    terms = view.get("propensity_terms") or []
    if terms:
        top = ", ".join(f"{t['feature']} {t['contribution']:+.2f}" for t in terms[:TOP])
        lines.append(f"  propensity  logit terms: {top}")
    lines.append(f"  model       {view['model_version']}")
    lines.append(
        f"  features    {f['events']} events, {f['purchases']} purchases "
        f"({f['total_spend']:,.2f} spent), {f['refunds']} refunds "
        f"({f['total_refunded']:,.2f}), {f['carts']} carts"
    )
    lines.append(
        f"              first event {_when(f['first_ms'])}, last event {_when(f['last_ms'])}, "
        f"last purchase {_when(f['last_purchase_ms'])}"
    )
    return "\n".join(lines)
