"""Input files as records: JSONL line numbers, gzip, CSV mapping and timestamps."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import orjson
import pytest

from consumer.service.errors import UserError
from consumer.tools.sources import CsvMapping, CsvReader, csv_timestamp, open_input, parse_instant
from schemas.decode import EventDecoder, Rejection

DECODER = EventDecoder()


def test_jsonl_offsets_are_line_numbers_and_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"a":1}\n\n   \n{"b":2}\r\n{"c":3}')
    with open_input(str(path)) as src:
        records = list(src.records)
        assert src.fraction_read() == 1.0
    assert [(r.topic, r.partition, r.offset, r.value) for r in records] == [
        ("events.jsonl", 0, 0, b'{"a":1}'),
        ("events.jsonl", 0, 3, b'{"b":2}'),
        ("events.jsonl", 0, 4, b'{"c":3}'),
    ]


def test_gzip_is_recognised_by_content_and_named_as_given(tmp_path: Path) -> None:
    path = tmp_path / "events.data"
    path.write_bytes(gzip.compress(b'{"a":1}\n{"b":2}\n'))
    with open_input(str(path), source_name="user-events") as src:
        assert [(r.topic, r.offset, r.value) for r in src.records] == [
            ("user-events", 0, b'{"a":1}'),
            ("user-events", 1, b'{"b":2}'),
        ]


def test_a_truncated_gzip_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"a":1}\n' * 1000)[:-30])
    with open_input(str(path)) as src, pytest.raises(UserError, match="corrupt or truncated"):
        list(src.records)


def test_missing_file_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"no such file: .*nope\.jsonl \(write one with"):
        open_input(str(tmp_path / "nope.jsonl"))


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("1767225600000", 1767225600000),
        ("2026-01-01", "2026-01-01T00:00:00Z"),
        ("2026-01-01 10:30", "2026-01-01T10:30:00Z"),
        ("2026-01-01 10:30:05", "2026-01-01T10:30:05Z"),
        ("2026-01-01T10:30:05.123", "2026-01-01T10:30:05.123Z"),
        ("2026-01-01T10:30:05+02:00", "2026-01-01T10:30:05+02:00"),
        ("2026-01-01 10:30:05+02:00", "2026-01-01T10:30:05+02:00"),
        ("01/02/2026", "01/02/2026"),
        ("", ""),
    ],
)
def test_csv_timestamps(cell: str, expected: str | int) -> None:
    assert csv_timestamp(cell) == expected


def test_offsetless_csv_times_are_utc() -> None:
    assert parse_instant("2026-01-01 00:00:00") == parse_instant("2026-01-01T00:00:00Z")
    assert parse_instant("2026-01-01") == 1_767_225_600_000


@pytest.mark.parametrize("text", ["tomorrow", "-5", "2026-02-30", "2026-01-01T25:00:00Z", ""])
def test_bad_instants_say_what_is_accepted(text: str) -> None:
    with pytest.raises(UserError, match="expected RFC 3339"):
        parse_instant(text, "--until")


def _events(data: bytes, mapping: str, event_type: str | None = None) -> list[tuple[int, object]]:
    reader = CsvReader(io.BytesIO(data), "orders.csv", CsvMapping.parse(mapping, event_type))
    return [(r.offset, DECODER.decode(r.value)) for r in reader.records()]


def test_csv_rows_become_events_with_deterministic_ids() -> None:
    data = (
        "\ufeffid;customer;date;total;cur\n"  # a BOM and semicolons, as spreadsheets write
        "A1;c1;2026-01-02;12.50;EUR\n"
        '"A;2";c2;"2026-01-03 08:00:00";7;USD\n'
    ).encode()
    out = _events(data, "user_id=customer,timestamp=date,amount=total,currency=cur")
    assert [(off, repr(e)) for off, e in out] == [
        (1, "Event('orders.csv:1', 'c1', 'purchase', 1767312000000, 12.5)"),
        (2, "Event('orders.csv:2', 'c2', 'purchase', 1767427200000, 7.0)"),
    ]
    mapped = _events(data, "user_id=customer,timestamp=date,event_id=id", "login")
    assert [e.event_id for _, e in mapped] == ["A1", "A;2"]  # type: ignore[union-attr]
    assert {e.event_type for _, e in mapped} == {"login"}  # type: ignore[union-attr]


def test_bad_rows_are_rejected_with_the_usual_reasons_and_their_row_numbers() -> None:
    data = (
        b"customer,date,total,kind\n"
        b"c1,2026-01-02,10,purchase\n"
        b"c2,soon,10,purchase\n"  # 2: unreadable timestamp
        b",2026-01-02,10,purchase\n"  # 3: no user
        b"c3,2026-01-02,1.234,56,purchase\n"  # 4: one cell too many: kind is "56"
        b"c4,2026-01-02,-3,purchase\n"  # 5: negative amount
        b"c5,2026-01-02,n/a,purchase\n"  # 6: amount not a number
        b"c6,2026-01-02,,purchase\n"  # 7: a purchase needs an amount
        b"\n"  # 8: blank, skipped
        b"c7,2026-01-02,,page_view\n"  # 9: fine without amount
        b"c8,2026-01-02"  # 10: short row, no kind
    )
    out = _events(data, "user_id=customer,timestamp=date,amount=total,event_type=kind")
    got = [(off, e.reason if isinstance(e, Rejection) else e.event_type) for off, e in out]
    assert got == [
        (1, "purchase"),
        (2, "bad_timestamp"),
        (3, "missing_field"),
        (4, "other"),
        (5, "negative_amount"),
        (6, "wrong_type"),
        (7, "missing_field"),
        (9, "page_view"),
        (10, "missing_field"),
    ]


def test_a_quoted_field_over_two_lines_is_one_row() -> None:
    data = b'customer,date,note\nc1,2026-01-02,"two\nlines"\nc2,2026-01-03,x\n'
    out = _events(data, "user_id=customer,timestamp=date", "login")
    assert [off for off, _ in out] == [1, 2]


@pytest.mark.parametrize(
    ("mapping", "event_type", "message"),
    [
        ("user=customer,timestamp=date", None, "unknown field 'user'; fields: user_id, timestamp"),
        ("user_id=customer", None, "--csv-map needs timestamp=COLUMN"),
        ("user_id", None, "'user_id' is not field=column"),
        ("user_id=c,timestamp=d,event_type=k", "purchase", "either as --event-type or in"),
    ],
)
def test_bad_mappings(mapping: str, event_type: str | None, message: str) -> None:
    with pytest.raises(UserError, match=message):
        CsvMapping.parse(mapping, event_type)


def test_an_unknown_column_lists_the_columns_there_are() -> None:
    m = CsvMapping.parse("user_id=client,timestamp=date", None)
    with pytest.raises(UserError) as err:
        CsvReader(io.BytesIO(b"customer,date,total\n"), "orders.csv", m)
    assert str(err.value) == (
        "--csv-map: orders.csv has no column 'client'; its columns are: customer, date, total"
    )


def test_a_csv_file_without_a_mapping_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv.gz"
    path.write_bytes(gzip.compress(b"customer,date\nc1,2026-01-01\n"))
    with pytest.raises(UserError, match="looks like CSV: say which columns"):
        open_input(str(path))
    with open_input(str(path), csv_map="user_id=customer,timestamp=date") as src:
        (rec,) = list(src.records)
    assert orjson.loads(rec.value or b"")["user_id"] == "c1"
