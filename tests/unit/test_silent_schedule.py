"""A silent user's timers: labels resolved on the re-score grid, a re-score period that
grows with silence, and fewer learning samples of the silent ([models] settings whose
defaults keep the weekly schedule)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from consumer.service.errors import SettingsError
from consumer.service.tier_config import DEFAULT_TIERS_FILE, load_engine
from online_models.engine import TierEngine
from online_models.event import Event
from online_models.features import DAY_MS
from online_models.user_state import UserState

#: The packaged config's lines that make its schedule the learning grid's, with
#: re-scores every 14 days after two weeks of silence (tests/unit/test_learning_grid.py).
GRID_LINES = ("learn_on_grid = ", "rescore_silent_after_days = ", "rescore_silent_days = ")


def tiers_file(tmp_path: Path, *settings: str, classic: bool = True) -> Path:
    """The packaged config (``classic``: without its learning grid, so snapshots at
    events and timers and weekly re-scores), with ``settings`` added to its [models]
    table, written to ``tmp_path / tiers.toml``."""
    added = "".join(f"{s}\n" for s in settings)
    text = DEFAULT_TIERS_FILE.read_text()
    if classic:
        lines = text.splitlines(keepends=True)
        text = "".join(line for line in lines if not line.startswith(GRID_LINES))
        assert len(lines) - len(text.splitlines()) == len(GRID_LINES)
    path = tmp_path / "tiers.toml"
    path.write_text(text.replace("\n[policy]\n", f"{added}\n[policy]\n", 1))
    return path


def engine_with(tmp_path: Path, *settings: str) -> TierEngine:
    """The engine of :func:`tiers_file`'s classic config with ``settings``."""
    return load_engine(tiers_file(tmp_path, *settings))


def silent_fires(engine: TierEngine, *events: Event) -> list[float]:
    """Apply ``events``, then fire the user's timer until their lifetime ends: the day
    (since the first event) of each fire, the last one the end."""
    state = UserState.new()
    for e in events:
        engine.apply(state, e, emitted_at_ms=0)
    fires = []
    while state.due_ms >= 0:
        due = state.due_ms
        fires.append(due / DAY_MS)
        if engine.expires(state, "u1", due):
            break
        engine.fire(state, "u1", due, emitted_at_ms=0)
    return fires


def buy(day: float, n: int = 1) -> Event:
    return Event(f"e{n}", "u1", "purchase", round(day * DAY_MS), 50.0)


def spy_labels(engine: TierEngine) -> list[tuple[int, dict[int, float]]]:
    """Every label set the heads learn, with the event time it is learnt at."""
    seen: list[tuple[int, dict[int, float]]] = []
    learn = engine.models.learn_label

    def spy(x: list[float], heads: dict[int, float], *args: Any, at_ms: int, **kw: Any) -> None:
        seen.append((at_ms, dict(heads)))
        learn(x, heads, *args, at_ms=at_ms, **kw)

    engine.models.learn_label = spy  # type: ignore[method-assign]
    return seen


def test_the_classic_schedule_fires_at_every_deadline_and_weekly(tmp_path: Path) -> None:
    fires = silent_fires(engine_with(tmp_path), buy(0))
    off_grid = [d for d in fires if d <= 365 and d % 7]
    assert off_grid, "the default schedule resolves each label at a timer of its own"
    assert len([d for d in fires if d <= 365]) > 52


def test_labels_at_rescore_fire_on_the_weekly_grid_only(tmp_path: Path) -> None:
    default = engine_with(tmp_path)
    engine = engine_with(tmp_path, "labels_at_rescore = true")
    fires = silent_fires(engine, buy(0))
    on_grid = [d for d in fires if d <= 364]
    assert on_grid == [7.0 * k for k in range(1, 53)]
    # past the last re-score, the deadlines of its snapshots still fire (then the end)
    assert all(d > 364 for d in fires[52:])
    assert fires[-1] == 550
    assert len(fires) < len(silent_fires(default, buy(0)))
    assert engine.model_version != default.model_version


def test_a_label_on_the_grid_is_that_of_its_window(tmp_path: Path) -> None:
    """A user buys on day 0 and again on day 33: the day-0 snapshot's 30-day label is
    negative (the second purchase falls after its window), learnt at the event of day 33,
    before the re-score of day 35 would have."""
    engine = engine_with(tmp_path, "labels_at_rescore = true")
    labels = spy_labels(engine)
    state = UserState.new()
    engine.apply(state, buy(0), emitted_at_ms=0)
    while state.due_ms < 33 * DAY_MS:
        engine.fire(state, "u1", state.due_ms, emitted_at_ms=0)
    assert not [at for at, heads in labels if 0 in heads], "resolved before its deadline"
    assert state.due_ms == 35 * DAY_MS  # not the deadline, day 30
    engine.apply(state, buy(33, 2), emitted_at_ms=0)
    first = [(at, heads[0]) for at, heads in labels if 0 in heads]
    assert first == [(33 * DAY_MS, 0.0)]


def test_a_window_that_ends_on_a_rescore_resolves_there(tmp_path: Path) -> None:
    """Re-scored monthly, a 30-day snapshot's window ends on the next re-score: its label
    is resolved there, not a month later; an event of the user at that very millisecond
    comes after the re-score and is not counted."""
    engine = engine_with(tmp_path, "labels_at_rescore = true")
    engine.horizons = replace(engine.horizons, rescore_every_ms=30 * DAY_MS)
    labels = spy_labels(engine)
    state = UserState.new()
    engine.apply(state, buy(0), emitted_at_ms=0)
    assert state.due_ms == 30 * DAY_MS
    engine.fire(state, "u1", state.due_ms, emitted_at_ms=0)
    engine.apply(state, buy(30, 2), emitted_at_ms=0)
    assert [(at, heads[0]) for at, heads in labels if 0 in heads] == [(30 * DAY_MS, 0.0)]


def test_the_period_grows_with_silence(tmp_path: Path) -> None:
    step = engine_with(tmp_path, "labels_at_rescore = true", "rescore_silent_days = 28")
    assert [d for d in silent_fires(step, buy(0)) if d <= 364] == [
        7.0,
        14.0,
        21.0,
        *(28.0 * k for k in range(1, 14)),
    ]
    doubling = engine_with(tmp_path, "labels_at_rescore = true", "rescore_growth = 1.0")
    assert [d for d in silent_fires(doubling, buy(0)) if d <= 224] == [
        7.0,
        14.0,
        28.0,
        56.0,
        112.0,
        224.0,
    ]


def test_silent_users_learn_less_often_when_told(tmp_path: Path) -> None:
    def samples(engine: TierEngine) -> list[float]:
        seen: list[float] = []
        learn = engine.models.learn_sample

        def spy(x: list[float], *, at_ms: int) -> None:
            seen.append(at_ms / DAY_MS)
            learn(x, at_ms=at_ms)

        engine.models.learn_sample = spy  # type: ignore[method-assign]
        silent_fires(engine, buy(0))
        return seen

    weekly = samples(engine_with(tmp_path, "labels_at_rescore = true"))
    monthly = samples(engine_with(tmp_path, "labels_at_rescore = true", "learn_silent_days = 28"))
    assert weekly[:4] == [0.0, 7.0, 14.0, 21.0]
    assert monthly[:4] == [0.0, 28.0, 56.0, 84.0]


def test_schedule_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="labels_at_rescore must be true or false"):
        engine_with(tmp_path, "labels_at_rescore = 1")
    with pytest.raises(SettingsError, match="rescore_growth must be a positive number"):
        engine_with(tmp_path, "rescore_growth = -1")
    assert engine_with(tmp_path).horizons.silent_knobs() == {}
    with pytest.raises(SettingsError, match="labels_at_rescore applies without the learning"):
        engine_with(tmp_path, "labels_at_rescore = true", "learn_on_grid = true")
    with pytest.raises(SettingsError, match="learn_silent_days applies without the learning"):
        load_engine(tiers_file(tmp_path, "learn_silent_days = 28", classic=False))
