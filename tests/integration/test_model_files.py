"""Model files and frozen runs: export the group's model, import it into another
deployment, score a stream with it frozen (nothing learned, every change names it), and
inspect users as of the deployment's event-time watermark."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import redis

from consumer.service.keys import KeySpace
from online_models.timefmt import iso_utc_ms
from tests.integration.support import REDIS, Names, cli, read_topic, stored_watermark

pytestmark = pytest.mark.integration


def test_export_import_frozen_run_and_inspect(
    stack: None, quick_models: Path, tmp_path: Path
) -> None:
    first, second = Names.fresh(), Names.fresh()
    tiers = {"TIERSTREAM_TIERS_FILE": str(quick_models)}
    try:
        gen = cli(
            "generate",
            "--users",
            "150",
            "--events",
            "4000",
            "--seed",
            "4",
            "--days",
            "90",
            "--topic",
            first.input,
            env=first.env(),
        )
        assert gen.returncode == 0, gen.stderr
        run = cli("run", "--stop-when-idle", "4", env=first.env(**tiers))
        assert run.returncode == 0, run.stderr

        model_file = tmp_path / "model.json"
        export = cli("model", "export", str(model_file), env=first.env(**tiers))
        assert export.returncode == 0, export.stderr
        model = orjson.loads(model_file.read_bytes())
        assert model["version"] >= 1 and model["name"].startswith(f"v{model['version']}-")

        wm = stored_watermark(first.prefix)
        assert wm is not None
        r = redis.Redis.from_url(REDIS)
        view = cli("inspect", "u000001", "--json", env=first.env(**tiers))
        assert view.returncode == 0, view.stderr
        body = orjson.loads(view.stdout)
        assert body["as_of"] == iso_utc_ms(wm)  # scores as of the watermark
        assert body["model_version"].startswith(model["name"] + ".")

        # another deployment: import, then score the same stream frozen
        imported = cli("model", "import", str(model_file), env=second.env(**tiers))
        assert imported.returncode == 0, imported.stderr
        env = second.env(TIERSTREAM_INPUT_TOPIC=first.input, **tiers)
        frozen = cli("run", "--stop-when-idle", "4", "--freeze-model", env=env)
        assert frozen.returncode == 0, frozen.stderr
        changes = [orjson.loads(c.value or b"") for c in read_topic(second.output)]
        assert changes
        assert {c["model_version"].split(".")[0] for c in changes} == {model["name"]}
        keys = KeySpace(second.prefix)
        assert orjson.loads(r.get(keys.model) or b"{}")["name"] == model["name"]
        assert r.scard(keys.contributors) == 0  # a frozen run contributes nothing
        r.close()

        bad = tmp_path / "bad.json"
        bad.write_bytes(model_file.read_bytes().replace(b'"version"', b'"versio"'))
        refused = cli("model", "import", str(bad), env=second.env())
        assert refused.returncode == 2 and "tierstream: error:" in refused.stderr
    finally:
        r = redis.Redis.from_url(REDIS)
        for n in (first, second):
            keys = list(r.scan_iter(match=f"{n.prefix}:*", count=1000))
            if keys:
                r.delete(*keys)
        r.close()


def test_a_model_of_an_older_version_is_refused_with_one_line_then_replaced(
    names: Names, quick_models: Path, tmp_path: Path
) -> None:
    """A group model an older version saved (another schema, other features) stops the
    service with one line that says how to replace it, not with a traceback on every
    batch; a model fitted and imported by this version lets it run."""
    tiers = {"TIERSTREAM_TIERS_FILE": str(quick_models)}
    events = tmp_path / "events.jsonl"
    stream = ["--users", "60", "--events", "1500", "--seed", "8", "--days", "40"]
    for target in (["--out", str(events)], ["--topic", names.input]):  # the same events
        gen = cli("generate", *stream, *target, env=names.env())
        assert gen.returncode == 0, gen.stderr
    old = {"schema": "tierstream.model.v3", "name": "v7-0123abcd", "version": 7}
    r = redis.Redis.from_url(REDIS)
    r.set(KeySpace(names.prefix).model, orjson.dumps(old))
    r.close()

    refused = cli("run", "--stop-when-idle", "3", env=names.env(**tiers))
    assert refused.returncode == 2, refused.stderr
    assert "Traceback" not in refused.stderr, refused.stderr
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("tierstream: error: the group's model in the state store"), last
    assert "tierstream.model.v3" in last and "tierstream model import" in last, last

    model_file = tmp_path / "fitted.json"
    fit = cli("model", "fit", str(events), "--out", str(model_file), env=names.env(**tiers))
    assert fit.returncode == 0, fit.stderr
    imported = cli("model", "import", str(model_file), env=names.env(**tiers))
    assert imported.returncode == 0, imported.stderr
    run = cli("run", "--stop-when-idle", "3", env=names.env(**tiers))
    assert run.returncode == 0, run.stderr
    assert "1,500 records" in run.stderr or "1500 records" in run.stderr, run.stderr
