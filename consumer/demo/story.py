"""The demo's terminal output: a sample of tier changes with their reasons, then the
summary (throughput, tier populations, transitions, agreement with the generator's truth).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO

from consumer.demo.result import NEW, DemoResult
from online_models.tier_change import TierChange
from online_models.timefmt import iso_utc_ms

__all__ = ["describe_change", "print_story"]


def _text_table(header: Sequence[str], rows: Sequence[Sequence[object]], indent: str = "  ") -> str:
    cells = [[str(h) for h in header]] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for r in cells:
        first = r[0].ljust(widths[0])
        rest = "  ".join(c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True))
        lines.append(f"{indent}{first}  {rest}".rstrip())
    return "\n".join(lines)


def _fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def describe_change(c: TierChange) -> str:
    """One line saying what changed and why.

    >>> c = TierChange("u7", "casual", "engaged", 3, 1_767_225_600_000, 0, {"value_score": 4.52},
    ...     {"kind": "threshold", "threshold": 4.0, "direction": "up", "contributions": [
    ...      {"feature": "spend_30d", "value": 182.4, "contribution": 5.21}]}, "policy-x")
    >>> describe_change(c)
    '2026-01-01 00:00  u7  casual -> engaged  score 4.52 crossed 4.00 up; spend_30d 182.40 (+5.21)'
    """
    r = c.reason
    when = iso_utc_ms(c.event_time_ms)[:16].replace("T", " ")
    score = c.scores.get("value_score")
    why = f"score {score:.2f}" if isinstance(score, float | int) else "scores"
    if r.get("kind") == "inactivity":
        why = f"silent, re-scored: {why}"
    if r.get("threshold") is not None:
        why += f" crossed {r['threshold']:.2f} {r.get('direction', '')}"
    top = ", ".join(
        f"{x['feature']} {x['value']:,.2f} ({x['contribution']:+.2f})"
        for x in r.get("contributions", [])
    )
    return f"{when}  {c.user_id}  {c.previous_tier or NEW} -> {c.tier}  {why}; {top}"


def print_story(result: DemoResult, out: TextIO) -> None:
    """The demo's terminal output: sample changes, then the summary."""
    s = result.summary
    print("\nA sample of tier changes (event time, user, move, why):", file=out)
    for c in result.samples:
        print(f"  {describe_change(c)}", file=out)
    applied = s.results.get("applied", 0)
    print(
        f"\nProcessed {s.records:,} records in {result.wall_s:.1f} s "
        f"({s.records / result.pipeline_s:,.0f} records/s through the pipeline; generating "
        f"them took {result.generate_s:.1f} s): {applied:,} events applied, "
        f"{s.results.get('duplicate', 0):,} redeliveries dropped, "
        f"{s.results.get('dlq', 0):,} malformed records dead-lettered, "
        f"{s.tier_changes:,} tier changes.",
        file=out,
    )
    total = sum(result.populations.values()) or 1
    print(f"\nTier populations at {iso_utc_ms(result.watermark_ms)[:10]}:", file=out)
    print(
        _text_table(
            ["tier", "users", "share"],
            [
                [t, result.populations[t], f"{result.populations[t] / total:.0%}"]
                for t in result.tiers
            ],
        ),
        file=out,
    )
    tr = result.transitions
    print("\nTier changes, from (rows) -> to (columns):", file=out)
    print(
        _text_table(
            ["from \\ to", *tr.columns], [[r, *c] for r, c in zip(tr.rows, tr.counts, strict=True)]
        ),
        file=out,
    )
    q = result.truth
    print("\nFinal tier by the generator's latent customer type:", file=out)
    print(
        _text_table(
            ["type \\ tier", *q.columns], [[r, *c] for r, c in zip(q.rows, q.counts, strict=True)]
        ),
        file=out,
    )
    seg = (
        "n/a (no segment scores yet)" if result.ari_segment is None else f"{result.ari_segment:.3f}"
    )
    print(
        f"  adjusted Rand index, type vs tier: {result.ari_tier:.3f}; type vs segment: {seg}",
        file=out,
    )
    for name, path in result.files.items():
        print(f"{name:>9}: {path}", file=out)
