"""Kafka headers on everything the service publishes: what the value is, without
parsing it (``content-type``, and the schema file under ``schemas/`` it follows).

A subscriber can route or reject on them before decoding; a tombstone carries the
headers of its topic too (its value is null, its schema the topic's).

>>> h = output_headers(changes="c", dlq="d", tiers="t", forget_into="in")
>>> dict(h["c"])["tierstream-schema"], dict(h["t"])["tierstream-schema"]
(b'tier-change.v4', b'user-tier.v1')
>>> dict(h["c"])["content-type"]
b'application/json'
"""

from __future__ import annotations

from collections.abc import Mapping

from consumer.service import dead_letters
from online_models import tier_change

Headers = list[tuple[str, bytes]]


def _headers(schema: str) -> Headers:
    return [("content-type", b"application/json"), ("tierstream-schema", schema.encode())]


def output_headers(
    *, changes: str, dlq: str, tiers: str, forget_into: str
) -> Mapping[str, Headers]:
    """Headers by output topic: the change, DLQ and current-tier topics, and the input
    topic (which gets only forwarded forget requests from the service)."""
    return {
        changes: _headers(f"tier-change.v{tier_change.SCHEMA_VERSION}"),
        dlq: _headers(f"dlq-record.v{dead_letters.SCHEMA_VERSION}"),
        tiers: _headers(f"user-tier.v{tier_change.CURRENT_SCHEMA_VERSION}"),
        forget_into: _headers("forget-request.v1"),
    }
