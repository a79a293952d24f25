"""``tierstream model export FILE`` / ``tierstream model import FILE``: the global model
as a plain JSON file (what-if replays, audits, moving a model between deployments).

An imported model is checked (schema, lengths, that its content matches its name, that
it knows the service's features) before anything is written.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from consumer.service.errors import ModelUnreadable, UserError
from consumer.service.state_store import StateStore
from online_models.feature_vector import FEATURE_NAMES
from online_models.global_model import GlobalModel


def stored_model(raw: bytes) -> GlobalModel:
    """The group's model as the state store holds it, or :class:`ModelUnreadable` with
    what to do about it: a model an older version saved (another schema, other features)
    stops the service with that one line, at start and in any batch, never with a
    traceback on every batch.

    >>> try:
    ...     stored_model(b'{"schema": "tierstream.model.v1", "version": 3}')
    ... except ModelUnreadable as exc:
    ...     print(str(exc)[:80])
    the group's model in the state store cannot be read by this version (not a tiers
    """
    try:
        model = GlobalModel.from_json(orjson.loads(raw))
        if model.feature_names != FEATURE_NAMES:
            raise ValueError(
                f"its {len(model.feature_names)} features are not this version's "
                f"{len(FEATURE_NAMES)}"
            )
    except (ValueError, TypeError) as exc:  # orjson's decode error is a ValueError
        raise ModelUnreadable(
            f"the group's model in the state store cannot be read by this version ({exc}); "
            "replace it with one of this version: `tierstream model fit EVENTS --out "
            "model.json` then `tierstream model import model.json` (docs/runbook.md, "
            '"A model saved by an older version")'
        ) from None
    return model


def export_model(store: StateStore, path: Path) -> GlobalModel:
    """Write the store's global model to ``path``; UserError if there is none yet."""
    raw = store.get_model()
    if raw is None:
        raise UserError("no global model in the state store yet: run the service first")
    model = stored_model(raw)
    write_model(model, path)
    return model


def write_model(model: GlobalModel, path: Path) -> None:
    """Write ``model`` to ``path`` as indented JSON; UserError if it cannot."""
    try:
        path.write_bytes(orjson.dumps(model.to_json(), option=orjson.OPT_INDENT_2) + b"\n")
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror}") from None


def read_model(path: Path) -> GlobalModel:
    """The model in ``path``, checked; UserError says what is wrong."""
    try:
        data = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
    except orjson.JSONDecodeError as exc:
        raise UserError(f"{path} is not JSON: {exc}") from None
    try:
        model = GlobalModel.from_json(data)
    except ValueError as exc:
        raise UserError(f"{path}: {exc}") from None
    if model.feature_names != FEATURE_NAMES:
        raise UserError(
            f"{path}: the model's features differ from this version's "
            f"({len(model.feature_names)} vs {len(FEATURE_NAMES)}): export it again"
        )
    return model


def import_model(store: StateStore, path: Path) -> GlobalModel:
    """Make the model in ``path`` the group's current version."""
    model = read_model(path)
    store.put_model(orjson.dumps(model.to_json()))
    return model
