"""`tierstream model fit` (a warm start from history) and `replay --model/--model-out`,
in memory, through the command line."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from consumer.cli import main
from consumer.demo.orders import OrderConfig, generate_orders


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
    until = "2026-01-01"
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


def test_model_fit_says_what_is_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = tmp_path / "few.jsonl"
    events.write_bytes(
        b'{"event_id":"e1","user_id":"u1","event_type":"login","timestamp":1767225600000}\n'
    )
    assert main(["model", "fit", str(events)]) != 0
    assert "--out" in capsys.readouterr().err
    assert main(["model", "fit", str(events), "--out", str(tmp_path / "m.json")]) != 0
    assert "needs more events" in capsys.readouterr().err
