"""`replay --state redis`, `snapshot` and `inspect` against the real Redis (`make stack-up`)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import redis

from consumer.demo.synthetic import GeneratorConfig, generate
from consumer.service.keys import KeySpace
from consumer.tools.snapshot import SCAN_COUNT
from tests.integration.support import REDIS, Names, cli

pytestmark = pytest.mark.integration

# More users than one SCAN/MGET round (1000), so the snapshot reads several.
CONFIG = GeneratorConfig(users=1300, events=6000, seed=21, days=45, bad_fraction=0.01)


def test_replay_into_redis_then_snapshot_and_inspect(names: Names, tmp_path: Path) -> None:
    assert CONFIG.users > SCAN_COUNT
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"".join(r.value + b"\n" for r in generate(CONFIG)))
    env = names.env()

    def outputs(tag: str) -> list[str]:
        return [
            "--changes-out",
            str(tmp_path / f"{tag}-changes.jsonl"),
            "--snapshot-out",
            str(tmp_path / f"{tag}-snapshot.jsonl"),
        ]

    memory = cli("replay", str(events), "--quiet", *outputs("memory"), env=env)
    assert memory.returncode == 0, memory.stderr
    shared = cli("replay", str(events), "--state", "redis", *outputs("redis"), env=env)
    assert shared.returncode == 0, shared.stderr
    read = {p.name: p.read_bytes() for p in tmp_path.glob("*-*.jsonl")}
    assert read["redis-changes.jsonl"] == read["memory-changes.jsonl"]
    assert read["redis-snapshot.jsonl"] == read["memory-snapshot.jsonl"]

    # The deployment's view: SCAN + MGET over the user keys, the stored model
    snap = cli("snapshot", "--out", str(tmp_path / "snapshot.jsonl"), env=env)
    assert snap.returncode == 0, snap.stderr
    snapshot = (tmp_path / "snapshot.jsonl").read_bytes()
    assert snapshot == read["memory-snapshot.jsonl"]
    users = [orjson.loads(line)["user_id"] for line in snapshot.splitlines()]
    r = redis.Redis.from_url(REDIS)
    stored = r.keys(KeySpace(names.prefix).users_pattern("events.jsonl", 0))
    r.close()
    assert len(users) == len(stored) > SCAN_COUNT and users == sorted(users)

    # A second replay of the same file into the same state applies nothing, and says so
    again = cli("replay", str(events), "--state", "redis", *outputs("again"), env=env)
    assert again.returncode == 0, again.stderr
    assert "were skipped: this state had applied them already" in again.stderr
    assert (tmp_path / "again-changes.jsonl").read_bytes() == b""

    # inspect from Redis and from a replay of the file say the same
    user = users[len(users) // 2]
    from_redis = cli("inspect", user, "--json", env=env)
    from_file = cli("inspect", user, "--json", "--replay", str(events), env=env)
    assert from_redis.returncode == 0 and from_file.returncode == 0, from_redis.stderr
    assert orjson.loads(from_redis.stdout) == orjson.loads(from_file.stdout)
    text = cli("inspect", user, env=env)
    assert text.stdout.startswith(f"user {user}\n  tier "), text.stdout
    missing = cli("inspect", "nobody", env=env)
    assert missing.returncode == 2
    assert f"no user 'nobody' in Redis at {REDIS} under key prefix" in missing.stderr


def test_snapshot_of_an_unreachable_redis_is_one_line(tmp_path: Path) -> None:
    result = cli(
        "snapshot",
        "--out",
        str(tmp_path / "s.jsonl"),
        env={"TIERSTREAM_REDIS_URL": "redis://:pw@127.0.0.1:1/0", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach Redis at redis://:***@127.0.0.1:1/0" in lines[0]
    assert not (tmp_path / "s.jsonl").exists()


def test_model_export_and_import(names: Names, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"".join(r.value + b"\n" for r in generate(CONFIG)))
    env = names.env()
    other = names.env(TIERSTREAM_KEY_PREFIX=f"{names.prefix}:other")  # cleaned up with ours
    assert cli("replay", str(events), "--state", "redis", "--quiet", env=env).returncode == 0
    empty = cli("model", "export", str(tmp_path / "none.json"), env=other)
    assert empty.returncode == 2 and "no global model in the state store yet" in empty.stderr
    exported = cli("model", "export", str(tmp_path / "model.json"), env=env)
    assert exported.returncode == 0, exported.stderr
    imported = cli("model", "import", str(tmp_path / "model.json"), env=other)
    assert imported.returncode == 0, imported.stderr
    again = cli("model", "export", str(tmp_path / "again.json"), env=other)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "again.json").read_bytes() == (tmp_path / "model.json").read_bytes()
