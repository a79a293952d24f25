"""``tierstream demo``: the whole pipeline in one process, with no server.

A synthetic stream (:mod:`consumer.demo.synthetic`) goes through
:class:`~consumer.tools.replay.Replay` (the live service's batch step and commit
protocol, memory state), the tier changes
are tallied as they come, and at the end the users' final tiers are compared with the
generator's truth (each user's latent customer type). What it prints and the report it
writes (``demo-report.html``) are built from the same :class:`DemoResult`.

>>> import io, tempfile
>>> with tempfile.TemporaryDirectory() as d:
...     result = run_demo(DemoConfig(users=40, events=1500, out_dir=Path(d)), stream=io.StringIO())
...     sorted(p.name for p in Path(d).iterdir())
['demo-changes.jsonl', 'demo-report.html', 'demo-snapshot.jsonl']
>>> result.summary.records, sum(result.populations.values())
(1500, 40)
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final, TextIO

import orjson

from consumer.demo import synthetic
from consumer.demo.config import DemoConfig
from consumer.demo.quality import Contingency, adjusted_rand_index
from consumer.demo.report_page import render_report
from consumer.demo.result import NEW, NO_TIER, DemoResult, PopulationTimeline
from consumer.demo.story import print_story
from consumer.service.checkpoint import CheckpointStats
from consumer.service.errors import UserError
from consumer.service.records import InputRecord, OutputRecord
from consumer.service.state_store import MemoryStateStore
from consumer.service.tier_config import load_engine
from consumer.tools.progress import Progress
from consumer.tools.replay import Replay, ReplaySummary
from consumer.tools.snapshot import line_from_view, write_lines
from online_models.engine import TierEngine
from online_models.features import DAY_MS
from online_models.segment_traits import TRAIT_NAMES
from online_models.state_codec import decode_state
from online_models.tier_change import TierChange
from online_models.timefmt import iso_utc_ms

__all__ = ["DemoConfig", "DemoResult", "run_demo"]

DEMO_TOPIC: Final = "demo"
#: Column label of an erased user's change (the demo forgets nobody; the type allows it).
ERASED: Final = "(erased)"


class _Tally:
    """What the demo keeps of each batch: tier changes by kind, the timeline, a sample."""

    def __init__(self, engine: TierEngine, start_ms: int) -> None:
        self.timeline = PopulationTimeline(engine.policy.names, start_ms)
        self.transitions: Counter[tuple[str, str]] = Counter()
        self.moves: list[TierChange] = []
        self.event_ms = start_ms

    def on_batch(self, stats: CheckpointStats, _records: Sequence[InputRecord]) -> None:
        out = stats.outcome
        for change in out.changes:
            self.timeline.observe(change)
            self.transitions[(change.previous_tier or NEW, change.tier or ERASED)] += 1
            if change.previous_tier is not None:
                self.moves.append(change)
        if out.max_event_ms is not None:
            self.event_ms = max(self.event_ms, out.max_event_ms)


class _TimedRecords:
    """The generator's records as input records, timing how long generating takes."""

    def __init__(self, config: synthetic.GeneratorConfig) -> None:
        self.seconds = 0.0
        self._it = synthetic.generate(config)
        self._offset = 0

    def __iter__(self) -> Iterator[InputRecord]:
        clock = time.perf_counter
        while True:
            t0 = clock()
            rec = next(self._it, None)
            self.seconds += clock() - t0
            if rec is None:
                return
            yield InputRecord(DEMO_TOPIC, 0, self._offset, None, rec.key, rec.value)
            self._offset += 1


def run_demo(
    config: DemoConfig, *, stream: TextIO, progress_stream: TextIO | None = None
) -> DemoResult:
    """Generate, process, compare and report; print the story on ``stream``."""
    if config.users <= 0 or config.events <= 0:
        raise UserError("--users and --events must be positive")
    engine = load_engine(config.tiers_file)
    gen = synthetic.GeneratorConfig(
        users=config.users,
        events=config.events,
        seed=config.seed,
        days=config.days,
        bad_fraction=config.bad_fraction,
    )
    out_dir = config.out_dir
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {out_dir}: {exc.strerror}") from None
    start_ms = round(gen.start.timestamp() * 1000)
    end_ms = start_ms + gen.days * DAY_MS
    print(
        f"tierstream demo: {config.users:,} synthetic users, {config.events:,} events over "
        f"{config.days} days (seed {config.seed}); memory state, no server",
        file=stream,
    )
    tally = _Tally(engine, start_ms)
    changes: list[bytes] = []
    store = MemoryStateStore()
    records = _TimedRecords(gen)
    progress = Progress(
        config.events,
        stream=progress_stream or stream,
        detail=lambda: (
            f"event time {iso_utc_ms(tally.event_ms)[:10]}, "
            f"{sum(tally.transitions.values()):,} tier changes"
        ),
    )

    def on_batch(stats: CheckpointStats, batch: Sequence[InputRecord]) -> None:
        tally.on_batch(stats, batch)
        if batch:  # the watermark's advance at the end has none
            progress(batch[-1].offset + 1)

    def emit(rec: OutputRecord) -> None:
        if rec.topic == "user-tier-changes" and rec.value is not None:
            changes.append(rec.value)

    t0 = time.perf_counter()
    replayer = Replay(engine, store, emit=emit, on_batch=on_batch, batch_size=config.batch_size)
    summary = replayer.run(records)
    replayer.advance_watermark(max(end_ms, summary.max_event_ms or end_ms))
    watermark = replayer.watermark_ms or end_ms
    tally.timeline.close(watermark)
    views = {
        u: engine.explain(decode_state(raw), watermark) for u, raw in sorted(store.users.items())
    }
    wall = time.perf_counter() - t0

    truth = {t["user_id"]: t["type"] for t in synthetic.truth(gen)}
    result = _result(config, engine, summary, tally, views, truth, wall, records.seconds, watermark)
    model = engine.models.model
    result.model_name = model.name
    if model.centroids:
        result.centroids = (list(TRAIT_NAMES), [list(c) for c in model.centroids])
    result.files = {
        "changes": out_dir / "demo-changes.jsonl",
        "snapshot": out_dir / "demo-snapshot.jsonl",
        "report": out_dir / "demo-report.html",
    }
    write_lines(result.files["changes"], changes)
    write_lines(
        result.files["snapshot"], (orjson.dumps(line_from_view(u, v)) for u, v in views.items())
    )
    _write_text(result.files["report"], render_report(result, [gen.start.date().isoformat()]))
    print_story(result, stream)
    return result


def _result(
    config: DemoConfig,
    engine: TierEngine,
    summary: ReplaySummary,
    tally: _Tally,
    views: dict[str, dict[str, Any]],
    truth: dict[str, str],
    wall_s: float,
    generate_s: float,
    watermark: int,
) -> DemoResult:
    tiers = engine.policy.names
    rank = {t: i for i, t in enumerate(tiers)}
    final = {u: views[u]["tier"] if u in views else NO_TIER for u in truth}
    columns = tiers + ([NO_TIER] if NO_TIER in final.values() else [])
    types = [p.name for p in synthetic.PROFILES if p.name in set(truth.values())]
    users = list(truth)
    segments = {u: v["scores"].get("segment") for u, v in views.items()}
    with_segment = [u for u in users if segments.get(u) is not None]
    ari_segment = (
        adjusted_rand_index(
            [truth[u] for u in with_segment], [str(segments[u]) for u in with_segment]
        )
        if with_segment
        else None
    )
    rows = [NEW, *tiers]
    transitions = Contingency(
        rows, tiers, [[tally.transitions[(a, b)] for b in tiers] for a in rows]
    )
    samples = _sample(tally.moves, config.sample_size)
    segment_table = None
    if with_segment:
        segment_table = _feature_table(
            views, lambda v: str(v["scores"]["segment"]), None, watermark, rank
        )
    return DemoResult(
        config=config,
        summary=summary,
        tiers=tiers,
        wall_s=wall_s,
        generate_s=generate_s,
        watermark_ms=watermark,
        populations=Counter(v["tier"] for v in views.values()),
        transitions=transitions,
        truth=Contingency.of(
            [truth[u] for u in users], [final[u] for u in users], rows=types, columns=columns
        ),
        ari_tier=adjusted_rand_index([truth[u] for u in users], [final[u] for u in users]),
        ari_segment=ari_segment,
        timeline=tally.timeline,
        samples=samples,
        tier_table=_feature_table(views, lambda v: str(v["tier"]), tiers, watermark, rank),
        segment_table=segment_table,
    )


def _sample(moves: list[TierChange], size: int) -> list[TierChange]:
    """Up to ``size`` tier moves spread over the run, half upward and half downward."""
    ups = [c for c in moves if c.reason.get("direction") == "up"]
    downs = [c for c in moves if c.reason.get("direction") == "down"]
    picked: list[TierChange] = []
    for group, k in ((ups, size - min(len(downs), size // 2)), (downs, size // 2)):
        if group and k > 0:
            step = len(group) / min(k, len(group))
            picked.extend(group[int(i * step)] for i in range(min(k, len(group))))
    return sorted(picked, key=lambda c: c.event_time_ms)


def _feature_table(
    views: dict[str, dict[str, Any]],
    key: Callable[[dict[str, Any]], str],
    order: list[str] | None,
    as_of_ms: int,
    rank: dict[str, int],
) -> tuple[list[str], list[list[object]]]:
    """Mean value score and features per group of users, as of ``as_of_ms``."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for v in views.values():
        groups.setdefault(key(v), []).append(v)
    names = [c["feature"] for c in next(iter(views.values()))["contributions"]] if views else []
    header = ["group", "users", "value score", *names]
    header += ["events", "purchases", "spend", "days since event", "score says lower"]
    rows: list[list[object]] = []
    for g in order if order is not None else sorted(groups):
        members = groups.get(g, [])
        n = len(members)
        if not n:
            rows.append([g, 0, *([None] * (len(header) - 2))])
            continue

        feats = [sum(_value(v, f) for v in members) / n for f in names]
        lower = sum(rank[v["score_tier"]] < rank.get(v["tier"], 0) for v in members)
        rows.append(
            [
                g,
                n,
                sum(v["scores"]["value_score"] for v in members) / n,
                *feats,
                sum(v["features"]["events"] for v in members) / n,
                sum(v["features"]["purchases"] for v in members) / n,
                sum(v["features"]["total_spend"] for v in members) / n,
                sum(as_of_ms - v["features"]["last_ms"] for v in members) / n / DAY_MS,
                f"{lower / n:.0%}",
            ]
        )
    return header, rows


def _value(view: dict[str, Any], feature: str) -> float:
    """The value of a score feature in an explanation."""
    return float(next(c["value"] for c in view["contributions"] if c["feature"] == feature))


def _write_text(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror}") from None
