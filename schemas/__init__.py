"""The message contracts of tierstream, as JSON Schema files, and their loader.

The ``*.json`` files beside this module are the source of truth for downstream teams in
any language; Python code validates against them through :func:`validator`.

>>> sorted(SCHEMA_FILES)
['dlq-record.v1', 'dlq-record.v2', 'forget-request.v1', 'input-event.v1', 'tier-change.v1',
 'tier-change.v2', 'tier-change.v3', 'tier-change.v4', 'user-tier.v1']
>>> validator("tier-change.v4").is_valid({"event_id": "x"})
False
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any, Final

import jsonschema_rs
import orjson

SCHEMA_FILES: Final = {
    "input-event.v1": "input-event.v1.json",
    "tier-change.v1": "tier-change.v1.json",
    "tier-change.v2": "tier-change.v2.json",
    "tier-change.v3": "tier-change.v3.json",
    "tier-change.v4": "tier-change.v4.json",
    "user-tier.v1": "user-tier.v1.json",
    "dlq-record.v1": "dlq-record.v1.json",
    "dlq-record.v2": "dlq-record.v2.json",
    "forget-request.v1": "forget-request.v1.json",
}


@functools.cache
def load(name: str) -> dict[str, Any]:
    """The parsed schema called ``name`` (e.g. ``"input-event.v1"``)."""
    try:
        filename = SCHEMA_FILES[name]
    except KeyError:
        raise KeyError(f"unknown schema {name!r}; known: {', '.join(SCHEMA_FILES)}") from None
    schema: dict[str, Any] = orjson.loads(resources.files(__name__).joinpath(filename).read_bytes())
    return schema


@functools.cache
def validator(name: str) -> Any:
    """A compiled validator for schema ``name`` (``is_valid``, ``iter_errors``, ``validate``)."""
    return jsonschema_rs.validator_for(load(name))
