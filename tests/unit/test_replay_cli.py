"""`tierstream replay` and `tierstream inspect --replay`, with memory state (no server)."""

from __future__ import annotations

import base64
import gzip
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from consumer.cli import main
from consumer.demo.synthetic import GeneratorConfig, generate
from consumer.tools.sources import parse_instant
from schemas import validator
from tests.integration.support import REPO

CONFIG = GeneratorConfig(users=60, events=3000, seed=4, days=60, bad_fraction=0.02)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own TIERSTREAM_* settings must not leak into these tests."""
    import os

    for name in list(os.environ):
        if name.startswith("TIERSTREAM_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("replay") / "events.jsonl"
    path.write_bytes(b"".join(r.value + b"\n" for r in generate(CONFIG)))
    return path


def replay(tmp: Path, events: Path, *extra: str, tag: str = "a") -> dict[str, bytes]:
    outs = {k: tmp / f"{tag}-{k}.jsonl" for k in ("changes", "dlq", "snapshot")}
    code = main(
        [
            "replay",
            str(events),
            "--quiet",
            "--changes-out",
            str(outs["changes"]),
            "--dlq-out",
            str(outs["dlq"]),
            "--snapshot-out",
            str(outs["snapshot"]),
            *extra,
        ]
    )
    assert code == 0
    return {k: p.read_bytes() for k, p in outs.items()}


def lines(data: bytes) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in data.splitlines()]


def test_two_replays_are_byte_identical_whatever_the_batch_size(
    tmp_path: Path, events: Path
) -> None:
    first = replay(tmp_path, events, tag="a")
    second = replay(tmp_path, events, "--batch-size", "333", tag="b")
    assert first == second
    changes = lines(first["changes"])
    assert changes, "the stream should change some tiers"
    check = validator("tier-change.v4")
    for change in changes:
        check.validate(change)
        assert change["emitted_at"] == change["event_time"]
    users = [s["user_id"] for s in lines(first["snapshot"])]
    assert users == sorted(users) and len(users) == CONFIG.users


def test_small_timer_slices_give_the_same_bytes(
    tmp_path: Path, events: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TIERSTREAM_MAX_TIMERS_PER_BATCH bounds what one batch of a replay holds, as in the
    service, and changes no output."""
    from consumer.commands.replay import _state_store
    from consumer.service.settings import Settings

    first = replay(tmp_path, events, tag="a")
    monkeypatch.setenv("TIERSTREAM_MAX_TIMERS_PER_BATCH", "3")
    store = _state_store(None, Settings.from_env())
    assert getattr(store, "max_timers", None) == 3
    assert replay(tmp_path, events, tag="b") == first


#: The users of :func:`_tiers_that_move`'s stream.
_MOVING_USERS = 40


def _tiers_that_move(
    tmp_path: Path, *, seed: int, days: int, dwell_days: int, also: dict[str, str] | None = None
) -> tuple[Path, Path]:
    """A dense stream of 40 users and the packaged tier file with a short dwell, a narrow
    margin and the ``also`` replacements (each found once): tiers move often enough to
    tell two ways of deciding apart. The stream's and the tier file's paths."""
    from consumer.service.tier_config import DEFAULT_TIERS_FILE

    events = tmp_path / "dense.jsonl"
    dense = GeneratorConfig(
        users=_MOVING_USERS, events=4000, seed=seed, days=days, bad_fraction=0.0
    )
    events.write_bytes(b"".join(r.value + b"\n" for r in generate(dense)))
    text = DEFAULT_TIERS_FILE.read_text()
    changes = {
        "min_dwell_days = 16": f"min_dwell_days = {dwell_days}",
        "hysteresis = 1.0": "hysteresis = 0.2",
    }
    for old, new in {**changes, **(also or {})}.items():
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    tiers = tmp_path / "tiers.toml"
    tiers.write_text(text)
    return events, tiers


def test_what_the_dwell_time_holds_is_not_scored_and_decides_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event or timer that takes no snapshot and no sample while the dwell time holds
    the user's tier is not scored (no score could change the tier): the changes and the
    snapshot (the scores of every user's last moment) are those of scoring everything.
    A dense stream, a short dwell and a narrow margin make tiers move often enough to
    tell."""
    from online_models.engine import EnginePass

    events, tiers = _tiers_that_move(tmp_path, seed=4, days=20, dwell_days=4)
    unscored = 0
    take = EnginePass._unscored

    def counted(self: EnginePass, *args: Any) -> Any:
        nonlocal unscored
        unscored += 1
        return take(self, *args)

    monkeypatch.setattr(EnginePass, "_unscored", counted)
    first = replay(tmp_path, events, "--tiers", str(tiers), tag="a")
    assert unscored > 150, "the stream should have events inside the dwell time"
    reasons = [orjson.loads(line)["reason"] for line in first["changes"].splitlines()]
    moves = [r for r in reasons if r["kind"] != "first_tier"]
    assert len(moves) > 15, "the stream should move tiers after the first"
    monkeypatch.setattr(EnginePass, "_held", lambda self, state, now: False)
    unscored = 0
    assert replay(tmp_path, events, "--tiers", str(tiers), tag="b") == first
    assert unscored == 0


@pytest.mark.parametrize("weights", ["propensity = 6.0", "propensity = 6.0\nsegment_rank = 0.7"])
def test_a_score_of_the_propensity_alone_decides_as_one_of_every_head(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, weights: str
) -> None:
    """When the score weighs no model term but the propensity and the segment's rank, a
    decision that changes no tier skips the other heads' predictions
    (:meth:`ValueScorer.value_with`): the changes and the snapshot are those of the
    general path, which predicts every head for every decision. A short dwell and a
    narrow margin make tiers move often enough to tell, and early segments give a rank."""
    from online_models.global_model import ScoredRows
    from online_models.scoring import ValueScorer

    events, tiers = _tiers_that_move(
        tmp_path,
        seed=5,
        days=40,
        dwell_days=2,
        also={
            "propensity = 6.0 ": weights + " ",
            # Segments (and so a rank) from the stream's second week on.
            "merge_every_samples = 2000": "merge_every_samples = 200",
            "min_init_samples = 1000": "min_init_samples = 100",
        },
    )
    predicted = 0
    predictions = ScoredRows.predictions

    def counted(self: ScoredRows, i: int) -> tuple[float, ...]:
        nonlocal predicted
        predicted += 1
        return predictions(self, i)

    monkeypatch.setattr(ScoredRows, "predictions", counted)
    first = replay(tmp_path, events, "--tiers", str(tiers), tag="a")
    reasons = [orjson.loads(line)["reason"] for line in first["changes"].splitlines()]
    changes = len(reasons)
    assert len([r for r in reasons if r["kind"] != "first_tier"]) > 15
    assert predicted <= changes + _MOVING_USERS, "a decision keeping the tier predicts no head"
    fast = predicted
    init = ValueScorer.__init__

    def general(self: ValueScorer, weights: Any) -> None:
        init(self, weights)
        self.needs_only_propensity = False

    monkeypatch.setattr(ValueScorer, "__init__", general)
    predicted = 0
    assert replay(tmp_path, events, "--tiers", str(tiers), tag="b") == first
    assert predicted > 2 * fast


def test_snapshot_lines_have_the_issue_fields(tmp_path: Path, events: Path) -> None:
    snap = lines(replay(tmp_path, events)["snapshot"])
    fields = ["user_id", "tier", "segment", "propensity", "value_score", "propensity_long"]
    fields += ["churn_risk", "expected_purchases", "expected_value", "model_version"]
    assert all(list(s)[:10] == fields and "features" in s for s in snap)
    changes = lines(replay(tmp_path, events)["changes"])
    last = {c["user_id"]: c["tier"] for c in changes}
    assert {s["user_id"]: s["tier"] for s in snap} == last


def test_dead_letters_carry_the_file_name_and_line_number(tmp_path: Path, events: Path) -> None:
    dead = lines(replay(tmp_path, events)["dlq"])
    source = events.read_bytes().splitlines()
    # A file has no record keys: a record keyed by another user is an event like any other.
    bad = [i for i, r in enumerate(generate(CONFIG)) if r.bad_reason not in (None, "key_mismatch")]
    assert [d["source_offset"] for d in dead] == bad
    for d in dead:
        assert d["source_topic"] == "events.jsonl" and d["source_partition"] == 0
        assert base64.b64decode(str(d["value_b64"])) == source[int(str(d["source_offset"]))]


def test_gzip_and_stdin_replay_the_same(tmp_path: Path, events: Path) -> None:
    plain = replay(tmp_path, events)
    packed = tmp_path / "events.jsonl.gz"
    packed.write_bytes(gzip.compress(events.read_bytes()))
    assert replay(tmp_path, packed, "--source-name", "events.jsonl", tag="gz") == plain
    argv = ["replay", "-", "--source-name", "events.jsonl", "--changes-out", "-", "--quiet"]
    result = subprocess.run(
        [sys.executable, "-m", "consumer.cli", *argv],
        input=events.read_bytes(),
        capture_output=True,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == plain["changes"]


def test_until_keeps_earlier_events_and_scores_as_of_it(tmp_path: Path, events: Path) -> None:
    until = "2026-01-20T00:00:00Z"
    until_ms = parse_instant(until)
    out = replay(tmp_path, events, "--until", until)
    changes = lines(out["changes"])
    assert changes and all(parse_instant(str(c["event_time"])) <= until_ms for c in changes)
    assert {s["as_of"] for s in lines(out["snapshot"])} == {"2026-01-20T00:00:00.000Z"}
    full = lines(replay(tmp_path, events, tag="full")["changes"])
    early = [c for c in full if parse_instant(str(c["event_time"])) <= until_ms]
    # What happened before the cut is what the full replay did before it, except the timers
    # that fire when event time reaches the cut with no event (they fire later, or never,
    # in the full replay).
    assert [c for c in changes if c["reason"]["kind"] != "inactivity"] == [  # type: ignore[index]
        c
        for c in early
        if c["reason"]["kind"] != "inactivity"  # type: ignore[index]
    ]


def replay_orders(tmp: Path, orders: Path) -> dict[str, bytes]:
    """Replay an order export: order, customer, date, total."""
    return replay(
        tmp,
        orders,
        "--csv-map",
        "user_id=customer,timestamp=date,amount=total,event_id=order",
        "--event-type",
        "purchase",
    )


def test_replay_of_a_csv_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    orders = tmp_path / "orders.csv"
    orders.write_text(
        "order,customer,date,total\n"
        "o1,c1,2026-01-02,120.00\n"
        "o2,c1,2026-01-09 10:00:00,80.5\n"
        "o3,c2,last week,5\n"
        "o4,c2,1767225600000,9.99\n"
    )
    out = replay_orders(tmp_path, orders)
    assert [d["source_offset"] for d in lines(out["dlq"])] == [3]
    assert [d["reason"] for d in lines(out["dlq"])] == ["bad_timestamp"]
    assert [s["user_id"] for s in lines(out["snapshot"])] == ["c1", "c2"]
    assert lines(out["snapshot"])[0]["features"]["purchases"] == 2  # type: ignore[index]
    assert "replayed 4 records of orders.csv" in capsys.readouterr().err


def test_the_summary_counts_the_timers_that_fired(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """c1 is silent from 1 January; c2's purchase on the 23rd moves event time past c1's
    re-scores of the 8th and 15th (weekly for two weeks of silence, then every 14 days:
    the next is on the 29th; no snapshot's deadline fires on the learning grid)."""
    orders = tmp_path / "orders.csv"
    orders.write_text("order,customer,date,total\no1,c1,2026-01-01,10\no2,c2,2026-01-23,10\n")
    replay_orders(tmp_path, orders)
    assert "2 tier changes, 2 timers fired" in capsys.readouterr().err


def test_inspect_a_replayed_user(events: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "u000003", "--replay", str(events)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("user u000003\n  tier ") and "why " in text and "model " in text
    assert main(["inspect", "u000003", "--replay", str(events), "--json"]) == 0
    body = orjson.loads(capsys.readouterr().out)
    assert body["user_id"] == "u000003" and body["tier"] and body["contributions"]


def one_line_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tierstream: error: "), err
    return err[0]


def test_errors_a_user_can_cause(
    tmp_path: Path, events: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "no such file: /nonexistent.jsonl" in one_line_error(
        capsys, "replay", "/nonexistent.jsonl"
    )
    assert "--until 'soon': expected RFC 3339" in one_line_error(
        capsys, "replay", str(events), "--until", "soon"
    )
    orders = tmp_path / "orders.csv"
    orders.write_text("customer,date,total\nc1,2026-01-02,1\n")
    assert "its columns are: customer, date, total" in one_line_error(
        capsys, "replay", str(orders), "--csv-map", "user_id=client,timestamp=date"
    )
    assert "looks like CSV" in one_line_error(capsys, "replay", str(orders))
    # Port 1 on loopback: nothing listens. The password never reaches the terminal.
    err = one_line_error(capsys, "replay", str(events), "--state", "redis://:s3cret@127.0.0.1:1/0")
    assert "cannot reach Redis at redis://:***@127.0.0.1:1/0" in err and "s3cret" not in err
    assert "or check --state" in err
    assert "expected memory, redis or a redis:// URL" in one_line_error(
        capsys, "replay", str(events), "--state", "postgres://db"
    )
    assert "cannot write /nonexistent/dir/x" in one_line_error(
        capsys, "replay", str(events), "--changes-out", "/nonexistent/dir/x"
    )
    assert "no user 'nobody' in" in one_line_error(
        capsys, "inspect", "nobody", "--replay", str(events)
    )


def test_a_replay_settles_the_garbage_collector(events: Path) -> None:
    """Start-up's objects are frozen out of the cyclic collector and its generations are
    collected less often (docs/performance.md "The garbage collector"); in a process of
    its own, as the setting is the process's."""
    probe = (
        "import gc, sys; from consumer.cli import main\n"
        "assert main(['replay', sys.argv[1], '--quiet']) == 0\n"
        "print(gc.get_threshold(), gc.get_freeze_count() > 10_000)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(events)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == "(50000, 20, 100) True"
