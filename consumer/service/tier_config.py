"""Reads a tier config file (TOML) into the core's engine: score weights, the tier
policy, and the models' horizons and merge policy.

>>> engine = load_engine(DEFAULT_TIERS_FILE)
>>> engine.policy.names, engine.horizons.label_ms // 86_400_000
(['dormant', 'casual', 'engaged', 'vip'], 30)
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from consumer.service.errors import SettingsError
from consumer.service.settings import DEFAULT_TIERS_FILE
from online_models.control_group import ControlGroup
from online_models.engine import Horizons, TierEngine, model_heads
from online_models.feature_vector import FEATURE_NAMES
from online_models.features import DAY_MS
from online_models.global_model import GlobalModel
from online_models.merge import MergePolicy
from online_models.online import OnlineModels
from online_models.scoring import ValueScorer
from online_models.tier_policy import TierPolicy

__all__ = ["DEFAULT_TIERS_FILE", "load_engine", "read_config"]

_MODEL_KEYS = {
    "label_horizon_days": float,
    "long_horizon_days": float,
    "churn_days": float,
    "learn_every_days": float,
    "rescore_days": float,
    "rescore_silent_after_days": float,
    "rescore_silent_days": float,
    "rescore_growth": float,
    "learn_silent_days": float,
    "segments": int,
    "segments_min": int,
    "segments_max": int,
    "choose_segments_every_versions": int,
    "merge_every_samples": int,
    "min_init_samples": int,
    "seed": int,
}

#: [models] switches (true or false).
_MODEL_FLAGS = ("labels_at_rescore", "learn_on_grid")


def read_config(path: Path) -> dict[str, Any]:
    """The parsed TOML at ``path``; SettingsError says what is wrong."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"cannot read tier config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"tier config {path} is not valid TOML: {exc}") from None


def load_engine(
    path: Path,
    *,
    model: GlobalModel | None = None,
    contribution: dict[str, Any] | None = None,
    frozen: bool = False,
    state_ttl_days: float | None = None,
) -> TierEngine:
    """The engine the config at ``path`` defines, scoring with ``model`` (version 0 if
    None) and resuming the learning in ``contribution``, ending users silent for
    ``state_ttl_days`` of event time (``TIERSTREAM_STATE_TTL_DAYS``; None: the default);
    SettingsError on a bad config."""
    config = read_config(path)
    try:
        weights = config["score"]["weights"]
        policy = config["policy"]
    except (KeyError, TypeError):
        raise SettingsError(
            f"tier config {path} needs a [score.weights] table and a [policy] table"
        ) from None
    try:
        horizons, merge_policy = _models(config.get("models", {}))
        if state_ttl_days is not None:
            horizons = replace(horizons, expire_after_ms=round(state_ttl_days * DAY_MS))
        return TierEngine(
            ValueScorer(weights),
            TierPolicy.from_config(policy),
            OnlineModels(
                model or GlobalModel.initial(FEATURE_NAMES, model_heads(horizons)),
                merge_policy,
                frozen=frozen,
                contribution=contribution,
            ),
            horizons,
            _control(config.get("control", {})),
        )
    except ValueError as exc:
        raise SettingsError(f"tier config {path}: {exc}") from None


def _control(table: Any) -> ControlGroup:
    """The ``[control]`` table: ``share`` (0..1) of users held out, drawn with ``salt``."""
    if not isinstance(table, Mapping):
        raise ValueError("[control] must be a table")
    unknown = sorted(set(table) - {"share", "salt"})
    if unknown:
        raise ValueError(f"unknown [control] key(s) {unknown}; known: ['salt', 'share']")
    share = table.get("share", 0.0)
    salt = table.get("salt", ControlGroup().salt)
    if not isinstance(share, int | float) or isinstance(share, bool):
        raise ValueError("[control] share must be a number between 0 and 1")
    if not isinstance(salt, str) or not salt:
        raise ValueError("[control] salt must be a non-empty string")
    return ControlGroup(float(share), salt)


def _models(table: Mapping[str, Any]) -> tuple[Horizons, MergePolicy]:
    unknown = sorted(set(table) - set(_MODEL_KEYS) - set(_MODEL_FLAGS))
    if unknown:
        known = sorted([*_MODEL_KEYS, *_MODEL_FLAGS])
        raise ValueError(f"unknown [models] key(s) {unknown}; known: {known}")
    for key in _MODEL_FLAGS:
        if key in table and not isinstance(table[key], bool):
            raise ValueError(f"[models] {key} must be true or false")
    values: dict[str, Any] = {}
    for key, kind in _MODEL_KEYS.items():
        if key in table:
            if not isinstance(table[key], int | float) or table[key] <= 0:
                raise ValueError(f"[models] {key} must be a positive number")
            values[key] = kind(table[key])
    if table.get("learn_on_grid"):
        for key in ("labels_at_rescore", "learn_silent_days"):
            if key in table:
                raise ValueError(
                    f"[models] {key} applies without the learning grid only "
                    "(learn_on_grid = false): on the grid, labels resolve and samples are "
                    "taken on the grid"
                )
    defaults_h, defaults_m = Horizons(), MergePolicy()
    horizons = Horizons(
        label_ms=round(values.get("label_horizon_days", defaults_h.label_ms / DAY_MS) * DAY_MS),
        long_ms=round(values.get("long_horizon_days", defaults_h.long_ms / DAY_MS) * DAY_MS),
        churn_ms=round(values.get("churn_days", defaults_h.churn_ms / DAY_MS) * DAY_MS),
        learn_every_ms=round(
            values.get("learn_every_days", defaults_h.learn_every_ms / DAY_MS) * DAY_MS
        ),
        rescore_every_ms=round(
            values.get("rescore_days", defaults_h.rescore_every_ms / DAY_MS) * DAY_MS
        ),
        silent_rescore_after_ms=round(
            values.get("rescore_silent_after_days", defaults_h.silent_rescore_after_ms / DAY_MS)
            * DAY_MS
        ),
        silent_rescore_every_ms=round(values.get("rescore_silent_days", 0.0) * DAY_MS),
        rescore_growth=values.get("rescore_growth", defaults_h.rescore_growth),
        labels_at_rescore=table.get("labels_at_rescore", defaults_h.labels_at_rescore),
        learn_on_grid=table.get("learn_on_grid", defaults_h.learn_on_grid),
        silent_learn_every_ms=round(values.get("learn_silent_days", 0.0) * DAY_MS),
    )
    policy = MergePolicy(
        every_samples=values.get("merge_every_samples", defaults_m.every_samples),
        n_segments=values.get("segments", defaults_m.n_segments),
        segments_min=values.get("segments_min", defaults_m.segments_min),
        segments_max=values.get("segments_max", defaults_m.segments_max),
        choose_every_versions=values.get(
            "choose_segments_every_versions", defaults_m.choose_every_versions
        ),
        min_init_samples=values.get("min_init_samples", defaults_m.min_init_samples),
        seed=values.get("seed", defaults_m.seed),
    )
    return horizons, policy
