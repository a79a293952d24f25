"""The command line itself: help on every option with its default, ``--version``, and
output into a pipe whose reader has gone (``| head``) ending quietly."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from importlib import metadata

import pytest

from consumer.cli import BROKEN_PIPE_STATUS, build_parser
from tests.integration.support import REPO


def sub_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_option_of_every_command_says_what_it_does() -> None:
    parser = build_parser()
    commands = sub_parsers(parser)
    assert set(commands) == {
        "run",
        "generate",
        "replay",
        "snapshot",
        "inspect",
        "config",
        "model",
        "state",
        "forget",
        "dlq",
        "demo",
        "follow",
    }
    silent = [
        f"{name} {'/'.join(a.option_strings) or a.dest}"
        for name, p in [("tierstream", parser), *commands.items()]
        for a in p._actions
        if not isinstance(a, argparse._SubParsersAction) and not (a.help or "").strip()
    ]
    assert silent == []


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        ("replay", "records per batch (default: 2000)"),
        ("replay", "(default: memory)"),
        ("generate", "how many users (default: 1000)"),
        ("demo", "how many records in all (default: 200000)"),
    ],
)
def test_help_shows_the_defaults(command: str, shown: str) -> None:
    text = " ".join(sub_parsers(build_parser())[command].format_help().split())
    assert shown in text


def test_help_shows_no_empty_default() -> None:
    text = sub_parsers(build_parser())["replay"].format_help()
    assert "default: None" not in text and "default: False" not in text


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"tierstream {metadata.version('tierstream')}"


@pytest.mark.parametrize(
    "argv",
    [
        ["config", "--show"],
        ["config", "--json"],
        ["generate", "--users", "50", "--events", "20000", "--out", "-"],
    ],
    ids=["config-show", "config-json", "generate-stdout"],
)
def test_a_reader_that_went_away_ends_the_command_quietly(argv: list[str]) -> None:
    """As ``tierstream config --show | head -1`` once the reader has gone: the read end
    is closed before the command writes, so every write fails (no race with the reader)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "consumer.cli", *argv],
            stdout=write_end,
            stderr=subprocess.PIPE,
            env={"PATH": "/usr/bin:/bin"},
            cwd=REPO,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, (
        result.stderr
    )
    assert result.returncode == BROKEN_PIPE_STATUS, result.stderr
