"""DLQ records (schema ``schemas/dlq-record.v1.json``): the original bytes, base64,
with the reason and the source coordinates.

>>> from consumer.service.records import InputRecord
>>> from schemas.decode import Rejection
>>> rec = InputRecord("user-events", 0, 7, 1000, b"u1", b"{oops")
>>> out = dead_letter(rec, Rejection("not_json", "bad"), "user-events-dlq", max_copy_bytes=3)
>>> body = orjson.loads(out.value)
>>> body["reason"], body["source_offset"], body["value_size"], body["value_truncated"]
('not_json', 7, 5, True)
>>> base64.b64decode(body["value_b64"])
b'{oo'
"""

from __future__ import annotations

import base64

import orjson

from consumer.service.records import InputRecord, OutputRecord
from schemas.decode import Rejection

SCHEMA_VERSION = 1


def dead_letter(
    record: InputRecord, rejection: Rejection, dlq_topic: str, *, max_copy_bytes: int
) -> OutputRecord:
    """The DLQ record for ``record``, keyed like the original (so per-user order holds)."""
    value = record.value or b""
    copied = value[:max_copy_bytes]
    body = {
        "schema_version": SCHEMA_VERSION,
        "reason": rejection.reason,
        "detail": rejection.detail,
        "source_topic": record.topic,
        "source_partition": record.partition,
        "source_offset": record.offset,
        "source_timestamp_ms": record.timestamp_ms,
        "key_b64": None if record.key is None else base64.b64encode(record.key).decode(),
        "value_b64": base64.b64encode(copied).decode(),
        "value_size": len(value),
        "value_truncated": len(copied) < len(value),
    }
    return OutputRecord(dlq_topic, record.key, orjson.dumps(body))
