"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from consumer.service.tier_config import DEFAULT_TIERS_FILE, load_engine
from online_models.global_model import GlobalModel


@pytest.fixture(scope="session")
def quick_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default tier config with models that advance after a few hundred samples, so
    small test streams build several global model versions."""
    text = DEFAULT_TIERS_FILE.read_text()
    for old, new in (
        ("merge_every_samples = 2000", "merge_every_samples = 150"),
        ("min_init_samples = 1000", "min_init_samples = 200"),
    ):
        assert old in text, f"the default tier config no longer has {old!r}"
        text = text.replace(old, new)
    path = tmp_path_factory.mktemp("tiers") / "quick-models.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="session")
def trained_model(quick_models: Path) -> GlobalModel:
    """A global model learned from a synthetic stream (segments, propensity weights), for
    tests that freeze a model: frozen version 0 scores everyone alike, so a test frozen on
    it would show only that a model which does nothing does nothing consistently."""
    from consumer.demo.synthetic import GeneratorConfig, generate
    from consumer.service.records import InputRecord
    from consumer.tools.replay import replay

    config = GeneratorConfig(users=300, events=20_000, seed=77, days=120)
    records = [InputRecord("t", 0, i, None, r.key, r.value) for i, r in enumerate(generate(config))]
    _, store = replay(records, load_engine(quick_models))
    model = GlobalModel.from_json(orjson.loads(store.model or b"{}"))
    assert model.version >= 2 and model.has_segments and any(model.weights), model.name
    return model


@pytest.fixture(scope="session")
def trained_model_file(
    trained_model: GlobalModel, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The trained model as a model file (TIERSTREAM_MODEL_FILE, `tierstream model export`)."""
    path = tmp_path_factory.mktemp("model") / "trained-model.json"
    path.write_bytes(orjson.dumps(trained_model.to_json(), option=orjson.OPT_INDENT_2))
    return path
