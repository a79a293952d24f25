"""Input files as :class:`~consumer.service.records.InputRecord` streams: JSONL (gzip too) and CSV.

A file stands in for one Kafka partition: topic = the file's name (or ``--source-name``),
partition 0, offset = the 0-based line number for JSONL, the 0-based CSV record number for
CSV (the header is record 0, so the first data row is 1; that is also its 0-based line
number unless a quoted field spans lines). A DLQ record from a file therefore carries the
line or row number as ``source_offset``. Blank lines are skipped (their numbers are not
reused).

>>> import io
>>> src = io.BytesIO(b'{"a":1}\\n\\n{"b":2}\\r\\n')
>>> [(r.topic, r.offset, r.value) for r in jsonl_records(src, "f.jsonl")]
[('f.jsonl', 0, b'{"a":1}'), ('f.jsonl', 2, b'{"b":2}')]

CSV rows become input events (``--csv-map field=column,...``). Timestamps may be
RFC 3339, epoch milliseconds, or ``YYYY-MM-DD`` / ``YYYY-MM-DD HH:MM[:SS[.fff]]`` without
an offset, which are read as UTC. A row that cannot be an event (no user, an unreadable
timestamp or amount) is still turned into a record carrying the raw cell, so the decoder
rejects it with the usual reason and it reaches the DLQ with its row number:

>>> csv = io.BytesIO(b"customer,date,total\\nc1,2026-01-02,12.50\\nc2,soon,3\\n")
>>> m = CsvMapping.parse("user_id=customer,timestamp=date,amount=total", "purchase")
>>> for r in CsvReader(csv, "orders.csv", m).records():
...     e = orjson.loads(r.value)
...     print(r.offset, e["event_id"], e["user_id"], e["event_type"], e["timestamp"], e["amount"])
1 orders.csv:1 c1 purchase 2026-01-02T00:00:00Z 12.5
2 orders.csv:2 c2 purchase soon 3.0
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import math
import re
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

import orjson

from consumer.service.errors import UserError
from consumer.service.records import InputRecord
from schemas.decode import parse_rfc3339_ms

__all__ = [
    "CSV_FIELDS",
    "CsvMapping",
    "CsvReader",
    "InputFile",
    "csv_timestamp",
    "jsonl_records",
    "open_input",
    "parse_instant",
]

#: Input-event fields a CSV column can be mapped to; the first two are required.
CSV_FIELDS: Final = (
    "user_id",
    "timestamp",
    "amount",
    "event_id",
    "event_type",
    "currency",
    "session_id",
)
_REQUIRED: Final = ("user_id", "timestamp")
_GZIP_MAGIC: Final = b"\x1f\x8b"
_DELIMITERS: Final = ",;\t|"
_DATE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")
_NAIVE: Final = re.compile(r"(\d{4}-\d{2}-\d{2})[ Tt](\d{2}:\d{2})(:\d{2}(\.\d{1,9})?)?")
_SPACED: Final = re.compile(r"(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2}.*)")


def parse_instant(text: str, option: str = "--until") -> int:
    """Epoch ms of a command-line instant: RFC 3339, epoch ms, or a ``YYYY-MM-DD`` UTC day
    (its start); a ``UserError`` saying what is accepted otherwise.

    >>> parse_instant("2026-01-01T00:00:00Z"), parse_instant("1767225600000")
    (1767225600000, 1767225600000)
    >>> parse_instant("2026-01-01")
    1767225600000
    >>> parse_instant("next week")
    Traceback (most recent call last):
    ...
    consumer.service.errors.UserError: --until 'next week': expected RFC 3339 ...
    """
    value = csv_timestamp(text.strip())
    try:
        if isinstance(value, int):
            return value
        if not value.startswith(("+", "-")):
            return parse_rfc3339_ms(value)
    except ValueError:
        pass
    raise UserError(
        f"{option} {text!r}: expected RFC 3339 (2026-03-01T00:00:00Z), epoch milliseconds "
        "or YYYY-MM-DD (UTC)"
    )


def csv_timestamp(cell: str) -> str | int:
    """A CSV timestamp cell in the input schema's terms (RFC 3339 string or epoch ms).

    Offset-less dates and date-times are UTC; anything unrecognised is returned as is, for
    the decoder to reject with ``bad_timestamp``.

    >>> csv_timestamp("1767225600000"), csv_timestamp("2026-03-01")
    (1767225600000, '2026-03-01T00:00:00Z')
    >>> csv_timestamp("2026-03-01 12:30"), csv_timestamp("2026-03-01 12:30:05.25")
    ('2026-03-01T12:30:00Z', '2026-03-01T12:30:05.25Z')
    >>> csv_timestamp("2026-03-01 12:30:05+02:00"), csv_timestamp("yesterday")
    ('2026-03-01T12:30:05+02:00', 'yesterday')
    """
    if cell.isascii() and cell.isdigit():
        return int(cell)
    if _DATE.fullmatch(cell):
        return f"{cell}T00:00:00Z"
    m = _NAIVE.fullmatch(cell)
    if m:
        return f"{m[1]}T{m[2]}{m[3] or ':00'}Z"
    m = _SPACED.fullmatch(cell)
    if m:
        return f"{m[1]}T{m[2]}"
    return cell


def jsonl_records(fh: IO[bytes], topic: str) -> Iterator[InputRecord]:
    """One record per non-blank line of ``fh``; offset = 0-based line number."""
    for number, line in enumerate(fh):
        value = line.rstrip(b"\r\n")
        if value.strip():
            yield InputRecord(topic, 0, number, None, None, value)


@dataclass(frozen=True)
class CsvMapping:
    """Which CSV column feeds which input-event field, and the event type of every row
    when no column gives it.

    >>> CsvMapping.parse("user_id=customer,timestamp=date", "purchase").columns
    {'user_id': 'customer', 'timestamp': 'date'}
    >>> CsvMapping.parse("user=customer", None)
    Traceback (most recent call last):
    ...
    consumer.service.errors.UserError: --csv-map: unknown field 'user'; fields: user_id, ...
    """

    columns: dict[str, str]
    event_type: str

    @classmethod
    def parse(cls, text: str, event_type: str | None) -> CsvMapping:
        """Parse ``field=column,...``; raise UserError naming what is wrong."""
        columns: dict[str, str] = {}
        for part in text.split(","):
            if not part.strip():
                continue
            field, eq, column = part.partition("=")
            field, column = field.strip(), column.strip()
            if not eq or not column:
                raise UserError(f"--csv-map: {part!r} is not field=column")
            if field not in CSV_FIELDS:
                raise UserError(
                    f"--csv-map: unknown field {field!r}; fields: {', '.join(CSV_FIELDS)}"
                )
            columns[field] = column
        missing = [f for f in _REQUIRED if f not in columns]
        if missing:
            raise UserError(
                f"--csv-map needs {' and '.join(f'{f}=COLUMN' for f in missing)} "
                "(e.g. --csv-map user_id=customer,timestamp=date,amount=total)"
            )
        if "event_type" in columns and event_type is not None:
            raise UserError("give the event type either as --event-type or in --csv-map, not both")
        return cls(columns, event_type or "purchase")


class CsvReader:
    """Rows of a CSV export (header first) as input-event records; see the module doc.

    The delimiter is ``,`` ``;`` tab or ``|``, whichever the header line has most of.
    ``event_id`` defaults to ``<file name>:<row number>``: deterministic, so a replay of
    the same file gives the same events; map a column (an order id) to it to have rows
    repeated across exports applied once.
    """

    def __init__(self, raw: IO[bytes], name: str, mapping: CsvMapping) -> None:
        self.name = name
        self.mapping = mapping
        self._text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")
        try:
            delimiter = self._read_header()
        except BaseException:
            self.release()
            raise
        self._rows = csv.reader(self._text, delimiter=delimiter)

    def records(self) -> Iterator[InputRecord]:
        """One record per non-empty row; offset = row number (the header is row 0)."""
        for number, row in enumerate(self._rows, start=1):
            if any(cell.strip() for cell in row):
                yield InputRecord(self.name, 0, number, None, None, self._event(row, number))

    def _read_header(self) -> str:
        """Read the header line; return the delimiter. UserError on an unknown column."""
        mapping, name = self.mapping, self.name
        header_line = self._text.readline()
        delimiter = max(_DELIMITERS, key=header_line.count)
        header = next(csv.reader([header_line], delimiter=delimiter), [])
        self.columns = [h.strip() for h in header]
        unknown = [c for c in mapping.columns.values() if c not in self.columns]
        if unknown:
            raise UserError(
                f"--csv-map: {name} has no column {', '.join(map(repr, unknown))}; "
                f"its columns are: {', '.join(self.columns) or '(none: empty file)'}"
            )
        self._index = {f: self.columns.index(c) for f, c in mapping.columns.items()}
        return delimiter

    def release(self) -> None:
        """Let go of the byte stream without closing it (its owner closes it)."""
        with contextlib.suppress(ValueError):  # already detached
            self._text.detach()

    def _event(self, row: list[str], number: int) -> bytes:
        def cell(field: str) -> str:
            i = self._index.get(field)
            return row[i].strip() if i is not None and i < len(row) else ""

        event: dict[str, object] = {"event_id": cell("event_id") or f"{self.name}:{number}"}
        if cell("user_id"):
            event["user_id"] = cell("user_id")
        event_type = cell("event_type") if "event_type" in self._index else self.mapping.event_type
        if event_type:
            event["event_type"] = event_type
        stamp = cell("timestamp")
        if stamp:
            event["timestamp"] = csv_timestamp(stamp)
        amount = cell("amount")
        if amount:
            event["amount"] = _number(amount)
        for field in ("currency", "session_id"):
            if cell(field):
                event[field] = cell(field)
        return orjson.dumps(event)


def _number(text: str) -> float | str:
    """A finite float, or the text itself (the decoder then rejects it as wrong_type)."""
    try:
        value = float(text)
    except ValueError:
        return text
    return value if math.isfinite(value) else text


class InputFile:
    """An input file opened for a replay: its records and how far reading has got.

    ``path`` ``-`` reads standard input. Gzip is recognised by its magic bytes, whatever
    the name.
    """

    def __init__(
        self,
        path: str,
        *,
        csv_map: str | None = None,
        event_type: str | None = None,
        source_name: str | None = None,
    ) -> None:
        self.path = path
        self.name = source_name or ("stdin" if path == "-" else Path(path).name)
        self.size: int | None = None
        self._csv: CsvReader | None = None
        if path == "-":
            self._raw: IO[bytes] = sys.stdin.buffer
        else:
            try:
                self._raw = open(path, "rb")  # noqa: SIM115 - closed by close()
                self.size = Path(path).stat().st_size
            except FileNotFoundError:
                raise UserError(
                    f"no such file: {path} (write one with `tierstream generate --out {path}`)"
                ) from None
            except OSError as exc:
                raise UserError(f"cannot read {path}: {exc.strerror}") from None
        try:
            data = self._open_data()
            is_csv = csv_map is not None or self.name.removesuffix(".gz").endswith(".csv")
            if is_csv and csv_map is None:
                raise UserError(
                    f"{path} looks like CSV: say which columns to use with --csv-map "
                    "user_id=COLUMN,timestamp=COLUMN[,amount=COLUMN,...]"
                )
            if csv_map is not None:
                mapping = CsvMapping.parse(csv_map, event_type)
                self._csv = CsvReader(data, self.name, mapping)
                rows = self._csv.records()
            else:
                if event_type is not None:
                    raise UserError("--event-type applies to CSV input only (with --csv-map)")
                rows = jsonl_records(data, self.name)
            self.records: Iterator[InputRecord] = self._guarded(rows)
        except BaseException:
            self.close()
            raise

    def _open_data(self) -> IO[bytes]:
        raw = self._raw
        head = raw.peek(2)[:2] if isinstance(raw, io.BufferedReader) else b""
        if head == _GZIP_MAGIC:
            return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
        return raw

    def _guarded(self, rows: Iterator[InputRecord]) -> Iterator[InputRecord]:
        """``rows``, with a corrupt or truncated file reported as a UserError."""
        try:
            yield from rows
        except (OSError, EOFError, zlib.error) as exc:
            raise UserError(
                f"cannot read {self.path}: {exc} (a corrupt or truncated file?)"
            ) from None

    def fraction_read(self) -> float | None:
        """Share of the file's bytes read so far (None for standard input)."""
        if not self.size:
            return None
        try:
            return min(1.0, self._raw.tell() / self.size)
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        """Close the file (standard input is left open)."""
        if self._csv is not None:
            self._csv.release()
        if self._raw is not sys.stdin.buffer:
            self._raw.close()

    def __enter__(self) -> InputFile:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def open_input(
    path: str,
    *,
    csv_map: str | None = None,
    event_type: str | None = None,
    source_name: str | None = None,
) -> InputFile:
    """Open ``path`` for a replay; UserError on a missing file or a bad CSV mapping."""
    return InputFile(path, csv_map=csv_map, event_type=event_type, source_name=source_name)
