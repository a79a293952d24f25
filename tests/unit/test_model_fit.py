"""`tierstream model fit` (a warm start from history) and `replay --model/--model-out`,
in memory, through the command line."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest

from consumer.cli import main
from consumer.demo.orders import OrderConfig, generate_orders
from consumer.service.records import InputRecord
from consumer.service.settings import Settings
from consumer.service.state_store import MemoryStateStore
from consumer.tools.model_fit import fit_model
from consumer.tools.replay import Replay, event_time
from online_models.feature_vector import FEATURE_NAMES
from online_models.global_model import GlobalModel
from online_models.online import OnlineModels, Resolved


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TIERSTREAM_"):
            monkeypatch.delenv(name)


def test_a_fitted_model_starts_a_replay_that_learns_on(tmp_path: Path) -> None:
    events = tmp_path / "orders.jsonl"
    events.write_bytes(
        b"".join(r.value + b"\n" for r in generate_orders(OrderConfig(users=150, seed=9, days=400)))
    )
    fitted, after = tmp_path / "fitted.json", tmp_path / "after.json"
    until = "2025-07-01"  # the stream's first half (400 days from 2025-01-01)
    assert main(["model", "fit", str(events), "--until", until, "--out", str(fitted)]) == 0
    model = orjson.loads(fitted.read_bytes())
    assert model["version"] > 0 and model["labels_seen"] > 0
    assert model["heads"][0]["name"] == "purchase_30d"
    snapshot = tmp_path / "snap.jsonl"
    argv = ["replay", str(events), "--quiet", "--model", str(fitted)]
    argv += ["--model-out", str(after), "--snapshot-out", str(snapshot)]
    assert main(argv) == 0
    later = orjson.loads(after.read_bytes())
    assert later["version"] > model["version"]  # it went on learning from the fitted one
    line = orjson.loads(snapshot.read_bytes().splitlines()[0])
    assert 0 <= line["propensity_long"] <= 1 and line["expected_value"] >= 0
    # purchases_log stays in the vector and out of every head (merge.HEAD_LEFT_OUT)
    left_out = FEATURE_NAMES.index("purchases_log")
    assert all(h["weights"][left_out] == 0.0 for h in (*model["heads"], *later["heads"]))
    assert all(h["weights"][FEATURE_NAMES.index("purchases_365d_log")] for h in later["heads"])
    assert "purchases" in line["features"]


def test_model_fit_says_what_is_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = tmp_path / "few.jsonl"
    events.write_bytes(
        b'{"event_id":"e1","user_id":"u1","event_type":"login","timestamp":1767225600000}\n'
    )
    assert main(["model", "fit", str(events)]) != 0
    assert "--out" in capsys.readouterr().err
    assert main(["model", "fit", str(events), "--out", str(tmp_path / "m.json")]) != 0
    assert "needs more events" in capsys.readouterr().err


def _orders() -> list[InputRecord]:
    """400 customers' orders over 400 days from 2025-01-01, as records of a file."""
    orders = generate_orders(OrderConfig(users=400, seed=9, days=400))
    return [InputRecord("f", 0, i, None, None, r.value) for i, r in enumerate(orders)]


#: The half of :func:`_orders`' history.
HALF_MS = 1_751_328_000_000  # 2025-07-01


def _versions(model: GlobalModel, records: list[InputRecord]) -> list[tuple[int, int]]:
    """Replay ``records`` from ``model`` with learning on: after each batch, its last
    event time and the model version."""
    store = MemoryStateStore()
    store.put_model(orjson.dumps(model.to_json()))
    seen: list[tuple[int, int]] = []
    replay = Replay.from_settings(
        Settings.from_env({}), store, emit=lambda _: None, batch_size=50, check_keys=False
    )

    def record(_: object, batch: Sequence[InputRecord]) -> None:
        last = max(event_time(r.value) or 0 for r in batch)
        seen.append((last, replay.engine.models.model.version))

    replay.on_batch = record
    replay.run(records)
    return seen


def test_a_fitted_model_does_not_learn_the_history_it_was_fitted_on_again() -> None:
    records = _orders()
    model = fit_model(Settings.from_env({}), lambda: records, passes=1, until_ms=HALF_MS)
    assert model.fitted_until_ms == HALF_MS
    seen = _versions(GlobalModel.from_json(orjson.loads(orjson.dumps(model.to_json()))), records)
    before = {v for t, v in seen if t <= HALF_MS}
    assert before == {model.version}  # read again for the users' states, not learnt
    assert seen[-1][1] > model.version  # after the fitted time it learns on
    # The same model learnt online (no fitted time) learns the first half again.
    online = model.replace(fitted_until_ms=None)
    assert "fitted_until_ms" not in online.to_json()
    again = _versions(online, records)
    assert max(v for t, v in again if t <= HALF_MS) > model.version


def test_a_fitted_model_still_observes_the_labels_it_does_not_learn() -> None:
    fitted = GlobalModel.initial(FEATURE_NAMES).replace(fitted_until_ms=100)
    models = OnlineModels(fitted)
    x = [1.0] * len(FEATURE_NAMES)
    models.learn_label(x, {0: 1.0}, 0.4, tier="vip", at_ms=100)
    models.learn_sample(x, at_ms=100)
    assert models.take_resolved() == [Resolved(0.4, True, "vip", False)]  # for the metrics
    assert (models.learner.labels, models.learner.samples) == (0, 0)
    models.learn_label(x, {0: 0.0}, 0.2, at_ms=101)
    models.learn_sample(x, at_ms=101)
    assert (models.learner.labels, models.learner.samples) == (1, 1)


def test_a_model_without_a_fitted_time_learns_everything_as_before() -> None:
    data = GlobalModel.initial(FEATURE_NAMES).to_json()
    assert "fitted_until_ms" not in data
    model = GlobalModel.from_json(data)
    assert model.fitted_until_ms is None and model.name == data["name"]
    models = OnlineModels(model)
    x = [1.0] * len(FEATURE_NAMES)
    models.learn_label(x, {0: 1.0}, 0.4, at_ms=0)
    models.learn_sample(x, at_ms=0)
    models.learn_sample(x)
    assert (models.learner.labels, models.learner.samples) == (1, 2)
    fitted = model.replace(fitted_until_ms=5)
    assert fitted.name != model.name  # the fitted time is part of the content
    assert GlobalModel.from_json(fitted.to_json()) == fitted


def _learnt(model: GlobalModel | None, records: list[InputRecord]) -> tuple[int, int, int]:
    """Replay ``records`` from ``model`` (version 0 if None) with learning on: the version
    reached and every label and sample learnt, merged into a version or still pending."""
    store = MemoryStateStore()
    if model is not None:
        store.put_model(orjson.dumps(model.to_json()))
    replay = Replay.from_settings(
        Settings.from_env({}), store, emit=lambda _: None, check_keys=False
    )
    replay.run(records)
    m = replay.engine.models
    return (
        m.model.version,
        m.model.labels_seen + m.learner.labels,
        m.model.samples_seen + m.learner.samples,
    )


def test_a_warm_start_learns_the_history_once_and_loses_none_of_it() -> None:
    """A deployment started from ``model fit`` on the first half (one pass, the default)
    ends having learnt every label and sample of the whole stream once, as one that learnt
    it all online: what the fit learnt after its last version is in the model it writes
    (before, it waited for more samples that never came, and the warm deployment, which
    does not learn that history again, never had it)."""
    records = _orders()
    fitted = fit_model(Settings.from_env({}), lambda: records, until_ms=HALF_MS)
    restored = GlobalModel.from_json(orjson.loads(orjson.dumps(fitted.to_json())))
    online, warm = _learnt(None, records), _learnt(restored, records)
    assert warm[1:] == online[1:]
    assert online[1] > 1_000 and online[2] > 1_000
    # Its last version closes the fit: all that a replay of the first half learnt.
    half = Replay.from_settings(
        Settings.from_env({}), MemoryStateStore(), emit=lambda _: None, check_keys=False
    )
    half.run(records, until_ms=HALF_MS)
    m = half.engine.models
    assert (fitted.labels_seen, fitted.samples_seen) == (
        m.model.labels_seen + m.learner.labels,
        m.model.samples_seen + m.learner.samples,
    )
