"""Log lines: plain text for people, or JSON lines for a log pipeline
(``TIERSTREAM_LOG_FORMAT=json``).

A notable event (partitions assigned or revoked, a new model version, dead letters, a
retry) is logged with ``extra={"event": ..., ...}``: in JSON its fields are keys of the
line, so a pipeline filters on ``event`` without parsing the message. Messages never
hold a secret (URLs are masked where they are made); nothing else of the record is
copied.

>>> import logging
>>> record = logging.LogRecord("consumer.service.ownership", logging.INFO, "", 0,
...     "partitions acquired: %s", ("events:0",), None)
>>> record.event, record.partitions = "assignment", ["events:0"]
>>> line = orjson.loads(JsonFormatter().format(record))
>>> line["event"], line["partitions"], line["message"], line["level"]
('assignment', ['events:0'], 'partitions acquired: events:0', 'info')
"""

from __future__ import annotations

import logging
import sys
from typing import Final

import orjson

from consumer.service.errors import SettingsError
from online_models.timefmt import iso_utc_ms

FORMATS: Final = ("text", "json")
#: The ``extra`` keys a JSON line carries.
FIELDS: Final = (
    "event",
    "partitions",
    "model_version",
    "folded",
    "reasons",
    "count",
    "error",
    "delay_s",
    "offset",
    "topic",
)
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": iso_utc_ms(round(record.created * 1000)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in FIELDS:
            if key in record.__dict__:
                line[key] = record.__dict__[key]
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure(level: str, fmt: str) -> None:
    """Log to stderr at ``level`` in ``fmt`` (``text`` or ``json``); the Kafka client's
    own chatter only from warnings up."""
    if fmt not in FORMATS:
        raise SettingsError(f"TIERSTREAM_LOG_FORMAT={fmt!r}: expected text or json")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))
    logging.getLogger("kafka").setLevel(logging.WARNING)
    # Its event loop warns whenever a task ran over 0.1 s: routine on a busy machine
    # (a GC pause, two cores shared with the broker), and nothing a user can act on.
    logging.getLogger("kafka.net.selector").setLevel(logging.ERROR)
