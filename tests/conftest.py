"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer.service.tier_config import DEFAULT_TIERS_FILE


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
