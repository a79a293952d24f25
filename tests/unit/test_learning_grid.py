"""The learning grid ([models] ``learn_on_grid``): a user's snapshots and learning samples
on fixed event-time moments, made at their next touch, so that the learning data no
longer depends on when their timers fire (and the re-score schedule can be sparse)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from consumer.cli import main
from consumer.demo.synthetic import GeneratorConfig, generate
from consumer.service.tier_config import DEFAULT_TIERS_FILE, load_engine
from online_models.engine import TierEngine
from online_models.event import Event
from online_models.feature_vector import FEATURE_NAMES
from online_models.features import DAY_MS
from online_models.state_codec import PACKED_LEAN, decode_state, encode_state
from online_models.user_state import UserState
from tests.unit.test_silent_schedule import buy, engine_with, silent_fires, tiers_file

GRID = "learn_on_grid = true"
DOUBLING = "rescore_growth = 1.0"


def view(day: float, n: int) -> Event:
    return Event(f"v{n}", "u1", "page_view", round(day * DAY_MS))


#: A customer who buys, browses, buys again, then goes silent for good.
HISTORY = (buy(0.5), view(3.2, 1), buy(40.1, 2), view(41, 2), view(100.3, 3))


class Spy:
    """Every sample and label set the engine's models learn, and the labels' scores."""

    def __init__(self, engine: TierEngine) -> None:
        self.engine = engine
        self.samples: list[tuple[int, tuple[float, ...]]] = []
        self.labels: list[tuple[int, tuple[float, ...], tuple[tuple[int, float], ...]]] = []
        models = engine.models
        learn_sample, learn_label = models.learn_sample, models.learn_label

        def sample(x: list[float], *, at_ms: int) -> None:
            self.samples.append((at_ms, tuple(x)))
            learn_sample(x, at_ms=at_ms)

        def label(x: list[float], heads: dict[int, float], *args: Any, **kw: Any) -> None:
            self.labels.append((kw["at_ms"], tuple(x), tuple(sorted(heads.items()))))
            learn_label(x, heads, *args, **kw)

        models.learn_sample = sample  # type: ignore[method-assign]
        models.learn_label = label  # type: ignore[method-assign]

    def moments(self, first_day: float) -> list[float]:
        """The day of each sample's grid moment, from its vector's tenure (days since
        the user's first event, on ``first_day``)."""
        tenure = FEATURE_NAMES.index("tenure_days_log")
        return [round(first_day + math.expm1(x[tenure]), 6) for _, x in self.samples]

    def life(self, *events: Event) -> list[float]:
        """The user's events, then every timer until their lifetime ends: the fire days."""
        return silent_fires(self.engine, *events)


def test_a_silent_user_is_rescored_on_the_doubling_schedule_then_at_max_silence(
    tmp_path: Path,
) -> None:
    fires = silent_fires(engine_with(tmp_path, GRID, DOUBLING), buy(0))
    assert fires[:7] == [7.0, 14.0, 28.0, 56.0, 112.0, 224.0, 365.0]
    # then the deadlines of the snapshots left (a millisecond after a window closes:
    # 30-day windows of days 336, 350, 364, 180-day ones of 189, 252, 315), then the end
    after = [round(d - 1 / DAY_MS, 6) for d in fires[7:-1]]
    assert after == [366.0, 369.0, 380.0, 394.0, 432.0, 495.0] and fires[-1] == 550
    weekly = silent_fires(engine_with(tmp_path, GRID), buy(0))
    assert weekly[:53] == [*(7.0 * k for k in range(1, 53)), 365.0]  # no deadline before
    assert weekly[53:] == fires[7:]
    classic = engine_with(tmp_path)
    assert len(silent_fires(classic, buy(0))) > len(weekly)
    assert engine_with(tmp_path, GRID).model_version != classic.model_version


def test_the_packaged_schedule_is_the_grid_rescored_every_two_weeks(tmp_path: Path) -> None:
    """Weekly for two weeks of silence, then every 14 days up to the year's last day;
    the learning data is the weekly grid's."""
    fires = silent_fires(load_engine(DEFAULT_TIERS_FILE), buy(0))
    assert fires[:28] == [7.0, *(14.0 * k for k in range(1, 27)), 365.0]
    assert fires[-1] == 550
    packaged, weekly = Spy(load_engine(DEFAULT_TIERS_FILE)), Spy(engine_with(tmp_path, GRID))
    packaged.life(*HISTORY)
    weekly.life(*HISTORY)
    assert [x for _, x in packaged.samples] == [x for _, x in weekly.samples]
    assert sorted(x[1:] for x in packaged.labels) == sorted(x[1:] for x in weekly.labels)


def test_samples_are_on_the_grid_while_the_user_is_present(tmp_path: Path) -> None:
    spy = Spy(engine_with(tmp_path, GRID, DOUBLING))
    fires = spy.life(*HISTORY)
    assert spy.moments(0.5) == [7.0 * k for k in range(1, 67)]  # every week, to a year on
    # each learnt at the touch that made it: an event, or a re-score after the last one
    touches = {round(at / DAY_MS, 6) for at, _ in spy.samples}
    assert touches <= {3.2, 40.1, 41.0, 100.3, *fires}
    assert len(touches) < len(spy.samples) // 4


def test_the_learning_data_does_not_depend_on_the_schedule(tmp_path: Path) -> None:
    """Re-scored weekly or on the doubling schedule, the user gives the models the same
    samples in the same order and the same labelled snapshots (at other times)."""
    weekly, doubling = Spy(engine_with(tmp_path, GRID)), Spy(engine_with(tmp_path, GRID, DOUBLING))
    fires_weekly, fires_doubling = weekly.life(*HISTORY), doubling.life(*HISTORY)
    assert len(fires_doubling) < len(fires_weekly) // 3
    assert [x for _, x in weekly.samples] == [x for _, x in doubling.samples]
    assert sorted(label[1:] for label in weekly.labels) == sorted(
        label[1:] for label in doubling.labels
    )
    # every snapshot's labels resolved by the end: 30-day and 180-day heads alike
    heads = {h for _, _, labels in doubling.labels for h, _ in labels}
    assert heads == set(range(len(doubling.engine.head_specs)))
    # learnt at fewer touches
    assert len({at for at, _, _ in doubling.labels}) < len({at for at, _, _ in weekly.labels})


def test_the_resolved_labels_carry_their_snapshots_scores(tmp_path: Path) -> None:
    """Each 30-day label comes out with the propensity its snapshot was scored with, in
    the decision of the touch that resolved it (what the tier conversions count)."""
    engine = engine_with(tmp_path, GRID, DOUBLING)
    state = UserState.new()
    engine.apply(state, buy(0.5), emitted_at_ms=0)
    run = engine.batch()
    decision = run.fire(state, "u1", 56 * DAY_MS, emitted_at_ms=0)  # one touch, 8 weeks on
    run.finish()
    # 30-day snapshots on days 7, 21, 35, 49 (every other week): the first two windows
    # closed by the grid's days 42 and 56
    assert [r.predicted > 0 for r in decision.resolved] == [True, True]
    assert engine.models.resolved == decision.resolved
    pending = sorted((p[0] // DAY_MS, p[1] // DAY_MS) for p in state.pending or ())
    assert pending == [(30, 35), (30, 49), (180, 7)]
    assert all(p[3] is not None for p in state.pending or ())


def test_a_duplicate_event_makes_no_grid_moment(tmp_path: Path) -> None:
    spy = Spy(engine_with(tmp_path, GRID, DOUBLING))
    state = UserState.new()
    engine = spy.engine
    engine.apply(state, buy(0.5), emitted_at_ms=0)
    engine.apply(state, buy(0.5), emitted_at_ms=0)  # the same event id, weeks later in the log
    assert spy.samples == [] and state.learned_ms == round(0.5 * DAY_MS) - 1
    engine.apply(state, view(20, 1), emitted_at_ms=0)
    assert spy.moments(0.5) == [7.0, 14.0]
    assert [at for at, _ in spy.samples] == [20 * DAY_MS] * 2  # learnt at the event


def test_an_event_far_in_the_future_makes_at_most_a_year_of_moments(tmp_path: Path) -> None:
    spy = Spy(engine_with(tmp_path, GRID, DOUBLING))
    state = UserState.new()
    spy.engine.apply(state, buy(0), emitted_at_ms=0)
    spy.engine.apply(state, Event("far", "u1", "page_view", 2_000_000 * DAY_MS), emitted_at_ms=0)
    spy.engine.apply(state, Event("far2", "u1", "page_view", 2_000_001 * DAY_MS), emitted_at_ms=0)
    # days 0 (the first event's own moment, after it), 7, ..., 364: then absent
    assert spy.moments(0) == [float(d) for d in range(0, 365, 7)]


def test_grid_settings_are_checked(tmp_path: Path) -> None:
    from consumer.service.errors import SettingsError

    with pytest.raises(SettingsError, match="learn_on_grid must be true or false"):
        engine_with(tmp_path, "learn_on_grid = 1")
    assert engine_with(tmp_path, GRID).horizons.silent_knobs() == {"learn_on_grid": 1.0}


def test_replays_on_the_grid_are_byte_identical_whatever_the_batch_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = GeneratorConfig(users=60, events=3000, seed=4, days=120, bad_fraction=0.0)
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"".join(r.value + b"\n" for r in generate(config)))
    monkeypatch.setenv("TIERSTREAM_TIERS_FILE", str(tiers_file(tmp_path, GRID, DOUBLING)))

    def replay(tag: str, *extra: str) -> tuple[bytes, bytes]:
        changes, snapshot = tmp_path / f"{tag}-c.jsonl", tmp_path / f"{tag}-s.jsonl"
        argv = ["replay", str(events), "--quiet", "--changes-out", str(changes)]
        assert main([*argv, "--snapshot-out", str(snapshot), *extra]) == 0
        return changes.read_bytes(), snapshot.read_bytes()

    first = replay("a")
    assert first == replay("b", "--batch-size", "333")
    assert first[0].count(b"\n") > config.users, "the stream should change some tiers"


def test_what_a_fitted_model_made_is_not_learnt_again(tmp_path: Path) -> None:
    """A model fitted on history up to day 30 (``tierstream model fit``) made the grid
    moments of the touches up to it; a deployment starting from it learns those of its
    later touches, even moments before day 30 (the fit could not know the silence)."""
    engine = engine_with(tmp_path, GRID, DOUBLING)
    models = engine.models
    models.model = models.model.replace(fitted_until_ms=30 * DAY_MS)
    early, late = UserState.new(), UserState.new()
    engine.apply(early, buy(0.5), emitted_at_ms=0)
    engine.apply(late, Event("l1", "u2", "purchase", round(0.5 * DAY_MS), 50.0), emitted_at_ms=0)
    engine.fire(early, "u1", 21 * DAY_MS, emitted_at_ms=0)  # days 7, 14, 21: made by the fit
    assert models.learner.samples == 0
    engine.fire(late, "u2", 35 * DAY_MS, emitted_at_ms=0)  # days 7 ... 35, after the fit
    assert models.learner.samples == 5


def test_a_vector_left_out_of_the_stored_state_is_learnt_as_it_was_taken() -> None:
    """A snapshot taken at a timer is stored without its vector (the features' own at its
    time, made again when its label is learnt); an event in between (one that comes back
    after a silence, whose touch takes snapshots before applying it; one dated before the
    user's others) first makes it the snapshot's own. The labels learnt are
    those of a user whose state never left memory."""

    def life(stored: bool) -> tuple[list[Any], int]:
        engine = load_engine(DEFAULT_TIERS_FILE)
        spy = Spy(engine)
        state = UserState.new()
        lean = 0

        def store() -> UserState:
            nonlocal lean
            if not stored:
                return state
            raw = encode_state(state)
            lean += raw[1] == PACKED_LEAN
            return decode_state(raw)

        engine.apply(state, buy(0.5), emitted_at_ms=0)
        state = store()
        while 0 <= state.due_ms < 20 * DAY_MS:  # silent: snapshots on the grid at timers
            engine.fire(state, "u1", state.due_ms, emitted_at_ms=0)
            state = store()
        # back after a silence: the touch makes the grid's moments first, then applies it
        engine.apply(state, view(27.3, 9), emitted_at_ms=0)
        state = store()
        late = Event("late", "u1", "purchase", round(0.2 * DAY_MS), 80.0)
        engine.apply(state, late, emitted_at_ms=0)  # dated before the first purchase
        state = store()
        while state.due_ms >= 0 and not engine.expires(state, "u1", state.due_ms):
            engine.fire(state, "u1", state.due_ms, emitted_at_ms=0)
            state = store()
        return spy.labels, lean

    labels, lean = life(stored=True)
    assert lean >= 2 and len(labels) > 10
    assert labels == life(stored=False)[0]
