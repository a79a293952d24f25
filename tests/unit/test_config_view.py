"""`tierstream config --show`: the settings in force, where each comes from, secrets masked."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from consumer.cli import main


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TIERSTREAM_"):
            monkeypatch.delenv(name)


def test_env_wins_over_the_file_and_passwords_are_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = tmp_path / "tierstream.toml"
    settings.write_text(
        '[tierstream]\nredis_url = "redis://app:hunter2@redis.internal:6379/1"\n'
        'group_id = "from-file"\nmax_poll_records = 500\n'
    )
    monkeypatch.setenv("TIERSTREAM_GROUP_ID", "from-env")
    assert main(["--config", str(settings), "config", "--show"]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out
    rows = {line.split()[0]: line for line in out.splitlines() if not line.startswith("#")}
    assert rows["TIERSTREAM_REDIS_URL"].split()[1:] == [
        "redis://app:***@redis.internal:6379/1",
        "[file]",
    ]
    assert rows["TIERSTREAM_GROUP_ID"].split()[1:] == ["from-env", "[env]"]
    assert rows["TIERSTREAM_MAX_POLL_RECORDS"].split()[1:] == ["500", "[file]"]
    assert rows["TIERSTREAM_INPUT_TOPIC"].split()[1:] == ["user-events", "[default]"]
    assert "# tiers: dormant < casual (2) < engaged (4) < vip (9)" in out


def test_the_settings_file_from_the_environment_and_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = tmp_path / "t.toml"
    settings.write_text('redis_url = "redis://:pw@h:6379/0"\n')
    monkeypatch.setenv("TIERSTREAM_CONFIG", str(settings))
    assert main(["config", "--json"]) == 0
    body = orjson.loads(capsys.readouterr().out)
    assert body["settings"]["redis_url"] == {"value": "redis://:***@h:6379/0", "source": "file"}
    assert [t["name"] for t in body["tiers"]] == ["dormant", "casual", "engaged", "vip"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("redis = 1\n", "unknown setting(s) redis; known: "),
        ("redis_url = [1]\n", "redis_url must be a string or a number"),
        ("redis_url = \n", "is not valid TOML"),
        ('max_poll_records = "many"\n', "TIERSTREAM_MAX_POLL_RECORDS='many' is not an integer"),
    ],
)
def test_a_bad_settings_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    settings = tmp_path / "bad.toml"
    settings.write_text(content)
    assert main(["--config", str(settings), "config"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tierstream: error: ") and message in err[0]


def test_a_missing_settings_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", "/nonexistent.toml", "config"]) == 2
    assert "settings file /nonexistent.toml: no such file" in capsys.readouterr().err
