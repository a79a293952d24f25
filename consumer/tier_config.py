"""Reads a tier config file (TOML) into the core's engine.

>>> engine = load_engine(DEFAULT_TIERS_FILE)
>>> engine.policy.names
['dormant', 'casual', 'engaged', 'vip']
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from consumer.errors import SettingsError
from consumer.settings import DEFAULT_TIERS_FILE
from online_models.engine import TierEngine
from online_models.scoring import ValueScorer
from online_models.tier_policy import TierPolicy

__all__ = ["DEFAULT_TIERS_FILE", "load_engine"]


def load_engine(path: Path) -> TierEngine:
    """The engine the config at ``path`` defines; SettingsError says what is wrong."""
    try:
        config = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"cannot read tier config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"tier config {path} is not valid TOML: {exc}") from None
    try:
        weights = config["score"]["weights"]
        policy = config["policy"]
    except (KeyError, TypeError):
        raise SettingsError(
            f"tier config {path} needs a [score.weights] table and a [policy] table"
        ) from None
    try:
        return TierEngine(ValueScorer(weights), TierPolicy.from_config(policy))
    except ValueError as exc:
        raise SettingsError(f"tier config {path}: {exc}") from None
