"""The HTML report of a demo run (``demo-report.html``): tier populations over event time,
the transition matrix, final tiers against the generator's truth, the segment centroids
of the final model, mean features per tier and segment, and a sample of tier changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from consumer.demo.charts import Report, heatmap, stacked_area, tier_colors
from consumer.demo.result import NEW, DemoResult
from online_models.timefmt import iso_utc_ms

__all__ = ["render_report"]


def render_report(result: DemoResult, notes: Sequence[str] = ()) -> str:
    """The HTML report of a demo run."""
    s = result.summary
    c = result.config
    report = Report(
        "tierstream demo",
        f"{c.users:,} synthetic users, {c.events:,} events over {c.days} days from "
        f"{', '.join(notes)} (seed {c.seed}); one process, memory state, the live service's "
        "batch step and commit protocol.",
    )
    report.add_facts(
        [
            ("records", f"{s.records:,}"),
            ("events applied", f"{s.results.get('applied', 0):,}"),
            ("redeliveries dropped", f"{s.results.get('duplicate', 0):,}"),
            ("dead letters", f"{s.results.get('dlq', 0):,}"),
            ("tier changes", f"{s.tier_changes:,}"),
            (
                "wall time",
                f"{result.wall_s:.1f} s (generating the input: {result.generate_s:.1f} s)",
            ),
            ("throughput", f"{s.records / result.pipeline_s:,.0f} records/s"),
            ("ARI, type vs tier", f"{result.ari_tier:.3f}"),
            (
                "ARI, type vs segment",
                "n/a (no segment scores yet)"
                if result.ari_segment is None
                else f"{result.ari_segment:.3f}",
            ),
            ("scored as of", iso_utc_ms(result.watermark_ms)),
        ]
    )
    colors = tier_colors(result.tiers)
    report.add_heading(
        "Tier populations over event time",
        "Users per tier at the end of each event-time day. Tiers move on the users' events "
        "and, for the silent, on a weekly re-score in event time. The first two months are "
        "the models' warm-up: no propensity label resolves before one horizon (30 days) has "
        "passed, the score leans on a prior until a few thousand labels are in, and the "
        "early versions still move many users together.",
    )
    tl = result.timeline
    report.add_chart("users per tier, daily", stacked_area(tl.times_ms, tl.series, colors))
    tr = result.transitions
    report.add_heading("Transition matrix", "Tier changes counted by previous tier and new tier.")
    report.add_chart(
        "rows: from, columns: to",
        heatmap(tr.rows, tr.columns, tr.counts, row_title="from", column_title="to"),
    )
    q = result.truth
    report.add_heading(
        "Against the generator's truth",
        "Final tier of each user by their latent customer type. Tiers rank value, types "
        "describe behaviour, so they are not expected to coincide; the adjusted Rand index "
        "measures the agreement (1: same partition, 0: chance).",
    )
    report.add_chart(
        "rows: latent type, columns: final tier; shade: share of the type",
        heatmap(
            q.rows, q.columns, q.counts, row_title="type", column_title="final tier", scale="row"
        ),
    )
    header, rows = result.tier_table
    report.add_heading(
        "Mean features per tier",
        f"As of {iso_utc_ms(result.watermark_ms)[:10]}; decayed features use the score's "
        "half-lives. 'score says lower': share of the tier whose score alone would now put "
        "them in a lower tier (held by the hysteresis margin or the minimum dwell time).",
    )
    report.add_table("", ["tier", *header[1:]], rows)
    if result.centroids is not None:
        names, centroids = result.centroids
        report.add_heading(
            "Segment centroids",
            f"The {len(centroids)} segments of the final global model ({result.model_name}), "
            "in the customer traits they are made of (log1p of events a week, purchases a "
            "year, order value); segments are ordered on the value axis, 0 lowest.",
        )
        report.add_chart(
            "rows: trait, columns: segment",
            heatmap(
                names,
                [str(k) for k in range(len(centroids))],
                [[c[i] for c in centroids] for i in range(len(names))],
                row_title="trait",
                column_title="segment",
                cell=56,
                scale="all",
            ),
        )
    if result.segment_table is not None:
        header, rows = result.segment_table
        report.add_heading("Mean features per segment", "Users by their segment at the end.")
        report.add_table("", ["segment", *header[1:]], rows)
    report.add_heading("A sample of tier changes")
    report.add_table(
        "",
        ["event time", "user", "from", "to", "value score", "threshold", "top contributions"],
        [
            [
                iso_utc_ms(ch.event_time_ms)[:16].replace("T", " "),
                ch.user_id,
                ch.previous_tier or NEW,
                ch.tier,
                ch.scores.get("value_score"),
                ch.reason.get("threshold"),
                ", ".join(
                    f"{x['feature']} {x['value']:,.1f} ({x['contribution']:+.2f})"
                    for x in ch.reason.get("contributions", [])
                ),
            ]
            for ch in result.samples
        ],
    )
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    report.add_text(f"Generated by `tierstream demo` on {generated}.")
    return report.html()
