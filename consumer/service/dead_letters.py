"""DLQ records (schema ``schemas/dlq-record.v2.json``): the original bytes, base64,
with the reason and the source coordinates.

A DLQ record must itself be publishable: the broker refuses messages over its limit
(1 MiB by default), and a record the outbox can never publish would be retried forever.
So the copied value is cut at ``max_copy_bytes`` (at most :data:`MAX_COPY_BYTES`) and the
key at :data:`MAX_KEY_BYTES`; the source coordinates still point at the whole record.

>>> from consumer.service.records import InputRecord
>>> from schemas.decode import Rejection
>>> rec = InputRecord("user-events", 0, 7, 1000, b"u1", b"{oops")
>>> out = dead_letter(rec, Rejection("not_json", "bad"), "user-events-dlq", max_copy_bytes=3)
>>> body = orjson.loads(out.value)
>>> body["reason"], body["source_offset"], body["value_size"], body["value_truncated"]
('not_json', 7, 5, True)
>>> base64.b64decode(body["value_b64"]), body["key_size"], body["key_truncated"], out.key
(b'{oo', 2, False, b'u1')
>>> huge = InputRecord("user-events", 0, 8, 1000, b"k" * 500_000, b"{}")
>>> out = dead_letter(huge, Rejection("key_mismatch", "x"), "dlq", max_copy_bytes=1024)
>>> len(out.key), orjson.loads(out.value)["key_truncated"], len(out.value) < 4096
(1024, True, True)
"""

from __future__ import annotations

import base64
from typing import Final

import orjson

from consumer.service.records import InputRecord, OutputRecord
from schemas.decode import Rejection

SCHEMA_VERSION: Final = 2
#: Longest key copied (and used as the DLQ record's own key): user ids are at most 256
#: characters by the input schema, so a longer key is hostile or a mistake.
MAX_KEY_BYTES: Final = 1024
#: Largest value copy a setting may ask for: its base64 (4/3 larger) plus the key and the
#: fields stay well under the broker's default 1 MiB message limit.
MAX_COPY_BYTES: Final = 512 * 1024


def dead_letter(
    record: InputRecord, rejection: Rejection, dlq_topic: str, *, max_copy_bytes: int
) -> OutputRecord:
    """The DLQ record for ``record``, keyed like the original (so per-user order holds)."""
    value = record.value or b""
    copied = value[: min(max_copy_bytes, MAX_COPY_BYTES)]
    key = record.key
    key_copy = None if key is None else key[:MAX_KEY_BYTES]
    body = {
        "schema_version": SCHEMA_VERSION,
        "reason": rejection.reason,
        "detail": rejection.detail,
        "source_topic": record.topic,
        "source_partition": record.partition,
        "source_offset": record.offset,
        "source_timestamp_ms": record.timestamp_ms,
        "key_b64": None if key_copy is None else base64.b64encode(key_copy).decode(),
        "key_size": None if key is None else len(key),
        "key_truncated": key is not None and len(key) > MAX_KEY_BYTES,
        "value_b64": base64.b64encode(copied).decode(),
        "value_size": len(value),
        "value_truncated": len(copied) < len(value),
    }
    return OutputRecord(dlq_topic, key_copy, orjson.dumps(body))
