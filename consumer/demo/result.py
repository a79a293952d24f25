"""What a demo run measured (:class:`DemoResult`), read by the terminal story
(:mod:`consumer.demo.story`) and the HTML report (:mod:`consumer.demo.report_page`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from consumer.demo.config import DemoConfig
from consumer.demo.quality import Contingency
from consumer.tools.replay import ReplaySummary
from online_models.features import DAY_MS
from online_models.tier_change import TierChange

__all__ = ["NEW", "NO_TIER", "DemoResult", "PopulationTimeline"]

#: Row label of a user's first tier in the transition matrix.
NEW: Final = "(new)"
#: Column label of users who had no valid event (possible when events < users).
NO_TIER: Final = "(no events)"


class PopulationTimeline:
    """How many users each tier holds, sampled at the end of every event-time day (UTC).

    Fed with tier changes in the order they happen; a change from a late event counts on
    the day being sampled.

    >>> t = PopulationTimeline(["low", "high"], start_ms=0)
    >>> change = lambda prev, new, day: TierChange("u", prev, new, 1, day * DAY_MS, 0, {}, {}, "")
    >>> t.observe(change(None, "low", 0)); t.observe(change("low", "high", 2))
    >>> t.close(3 * DAY_MS)
    >>> t.series, len(t.times_ms)
    ({'low': [1, 1, 0], 'high': [0, 0, 1]}, 3)
    """

    def __init__(self, tiers: Sequence[str], start_ms: int) -> None:
        self.tiers = list(tiers)
        self.counts: Counter[str] = Counter()
        self.day = start_ms // DAY_MS
        self.times_ms: list[int] = []
        self.series: dict[str, list[int]] = {t: [] for t in self.tiers}

    def observe(self, change: TierChange) -> None:
        """Account for one tier change."""
        self._sample_until(change.event_time_ms // DAY_MS)
        if change.previous_tier is not None:
            self.counts[change.previous_tier] -= 1
        if change.tier is not None:  # None: the user was erased
            self.counts[change.tier] += 1

    def close(self, end_ms: int) -> None:
        """Sample every day up to the one ending at ``end_ms``."""
        self._sample_until(-(-end_ms // DAY_MS))

    def _sample_until(self, day: int) -> None:
        while self.day < day:
            self.times_ms.append(self.day * DAY_MS)
            for t in self.tiers:
                self.series[t].append(self.counts[t])
            self.day += 1


@dataclass
class DemoResult:
    """Everything the demo measured."""

    config: DemoConfig
    summary: ReplaySummary
    tiers: list[str]
    wall_s: float
    generate_s: float
    watermark_ms: int
    populations: Counter[str]
    transitions: Contingency
    truth: Contingency
    ari_tier: float
    #: None until the engine reports a ``segment`` score (the online models of issue 3).
    ari_segment: float | None
    timeline: PopulationTimeline
    samples: list[TierChange]
    tier_table: tuple[list[str], list[list[object]]]
    segment_table: tuple[list[str], list[list[object]]] | None
    #: The final model's segment traits and centroids (in the traits' log units), when it
    #: has any.
    centroids: tuple[list[str], list[list[float]]] | None = None
    model_name: str = ""
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def pipeline_s(self) -> float:
        """Time spent in the pipeline (not generating the input)."""
        return max(self.wall_s - self.generate_s, 1e-9)
