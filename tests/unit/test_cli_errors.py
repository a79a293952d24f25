"""Errors a user can cause print one line and exit 2, with no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.integration.support import REPO


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consumer.cli", *args],
        env={"PATH": "/usr/bin:/bin", **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"TIERSTREAM_MAX_POLL_RECORDS": "lots"},
            "TIERSTREAM_MAX_POLL_RECORDS='lots' is not an integer",
        ),
        ({"TIERSTREAM_BATCH_LINGER_MS": "-5"}, "BATCH_LINGER_MS"),
        ({"TIERSTREAM_KAFKA_BOOTSTRAP": "nohostport"}, "expected host:port"),
        ({"TIERSTREAM_REDIS_URL": "http://x"}, "expected redis://host:port/db"),
        ({"TIERSTREAM_TIERS_FILE": "/nonexistent.toml"}, "no such file"),
        # Port 1 on loopback: nothing listens, the connection is refused at once.
        (
            {"TIERSTREAM_REDIS_URL": "redis://127.0.0.1:1/0"},
            "cannot reach Redis at redis://127.0.0.1:1/0",
        ),
    ],
)
def test_run_with_a_bad_setting_says_what_to_fix(env: dict[str, str], message: str) -> None:
    result = run("run", env=env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tierstream: error: "), result.stderr
    assert message in lines[0]


def test_a_bad_tier_config_names_the_problem(tmp_path) -> None:
    bad = tmp_path / "tiers.toml"
    bad.write_text(
        '[score.weights]\nspend_30d = 1\n[policy]\ntiers = [{name = "a"}, {name = "b"}]\n'
    )
    result = run("run", env={"TIERSTREAM_TIERS_FILE": str(bad)})
    assert result.returncode == 2
    assert "tiers[1] (b) needs a numeric 'min_score'" in result.stderr
    bad.write_text("[score.weights\n")
    assert "is not valid TOML" in run("run", env={"TIERSTREAM_TIERS_FILE": str(bad)}).stderr


def test_generate_rejects_bad_arguments(tmp_path) -> None:
    result = run("generate", "--users", "0", "--out", str(tmp_path / "x"), env={})
    assert result.returncode == 2 and "--users and --events must be positive" in result.stderr
    result = run("generate", "--bad-fraction", "2", "--out", str(tmp_path / "x"), env={})
    assert result.returncode == 2 and "--bad-fraction" in result.stderr
    result = run("generate", "--out", "/nonexistent/dir/x.jsonl", env={})
    assert result.returncode == 2 and "cannot write /nonexistent/dir/x.jsonl" in result.stderr


def test_generate_is_deterministic(tmp_path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    for path in (a, b):
        assert (
            run(
                "generate",
                "--users",
                "30",
                "--events",
                "600",
                "--seed",
                "3",
                "--out",
                str(path),
                env={},
            ).returncode
            == 0
        )
    assert a.read_bytes() == b.read_bytes() and len(a.read_bytes().splitlines()) == 600


SECRET = "s3cr3t-Pa55"


@pytest.mark.parametrize(
    "args",
    [
        ["run"],
        ["snapshot", "--out", "-"],
        ["inspect", "u1"],
        ["model", "export", "/tmp/tierstream-test-model.json"],
        ["replay", "--state", f"redis://:{SECRET}@127.0.0.1:1/0", "-"],
        ["replay", "--state", f"redis://user:{SECRET}@127.0.0.1:1/0?password={SECRET}", "-"],
        ["config", "--show"],
        ["config", "--json"],
    ],
)
def test_no_secret_in_any_failing_connection_path(args: list[str]) -> None:
    """Every command that reaches Redis fails on a closed port; its output never carries
    the password of the URL it was given (issue 8, item 10)."""
    result = subprocess.run(
        [sys.executable, "-m", "consumer.cli", *args],
        env={"PATH": "/usr/bin:/bin", "TIERSTREAM_REDIS_URL": f"redis://:{SECRET}@127.0.0.1:1/0"},
        cwd=REPO,
        capture_output=True,
        text=True,
        input="",
        timeout=60,
    )
    assert SECRET not in result.stdout + result.stderr, result.stdout + result.stderr
    if args[0] != "config":
        assert result.returncode == 2, result.stderr
        assert "cannot reach Redis at redis://" in result.stderr and "***" in result.stderr


@pytest.mark.parametrize(
    "url",
    [
        f"redis+cluster://:{SECRET}@127.0.0.1:1,127.0.0.1:2",
        f"redis+sentinel://user:{SECRET}@127.0.0.1:1/main/0?sentinel_password={SECRET}",
    ],
)
@pytest.mark.parametrize(
    "args", [["run"], ["snapshot", "--out", "-"], ["inspect", "u1"], ["state", "repartition"]]
)
def test_no_secret_when_a_cluster_or_sentinel_is_unreachable(args: list[str], url: str) -> None:
    result = run(*args, env={"TIERSTREAM_REDIS_URL": url})
    assert SECRET not in result.stdout + result.stderr, result.stdout + result.stderr
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach Redis at redis+" in lines[0], result.stderr
    assert "***" in lines[0]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (f"redis+cluster://:{SECRET}@h1:7000/3", "Redis Cluster has database 0 only"),
        (f"redis+sentinel://:{SECRET}@s1:26379", "a Sentinel URL names the primary"),
        (f"redis+sentinel://:{SECRET}@s1:x/main", "expected host:port"),
        (f"mongodb://:{SECRET}@h", "expected redis://host:port/db"),
    ],
)
def test_a_bad_redis_url_is_one_line_without_its_password(url: str, message: str) -> None:
    result = run("run", env={"TIERSTREAM_REDIS_URL": url})
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert SECRET not in result.stderr
