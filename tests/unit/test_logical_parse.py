"""The log reader's parsing and paging, without a database (wal2json v2 rows as text)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from services.ingest.logical import (
    TOAST_UNCHANGED_COLUMN,
    ChangePage,
    ChangeReader,
    SlotHealth,
    Transaction,
    UnsupportedTypeError,
    consume,
    convert,
    parse_transactions,
    staging_row,
    type_name,
)
from shared.changes import COMMIT_TS_COLUMN, LSN_COLUMN, OP_COLUMN, XID_COLUMN, Operation

TS = "2026-12-02 18:27:58.607311+00"
NAIVE = datetime(2022, 11, 3, 14, 20, 51, 563_000)


def col(name: str, type_: str, value: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, "value": value}


def txn(xid: int, commit: str, end: str, *changes: dict[str, Any]) -> list[tuple[str, int, str]]:
    head = {"action": "B", "xid": xid, "timestamp": TS, "lsn": commit, "nextlsn": end}
    tail = {**head, "action": "C"}
    body = [{"xid": xid, "timestamp": TS, "schema": "public", **c} for c in changes]
    return [(commit, xid, json.dumps(m)) for m in [head, *body]] + [(end, xid, json.dumps(tail))]


def test_changes_are_grouped_by_transaction_with_commit_metadata():
    rows = txn(
        7,
        "0/20",
        "0/28",
        {"action": "I", "lsn": "0/10", "table": "t", "columns": [col("id", "integer", 1)]},
        {
            "action": "U",
            "lsn": "0/18",
            "table": "t",
            "columns": [col("id", "integer", 1)],
            "identity": [col("id", "integer", 1)],
        },
    ) + txn(8, "0/40", "0/48", {"action": "T", "lsn": "0/30", "table": "u"})

    first, second = parse_transactions(rows)

    assert isinstance(first, Transaction)
    assert (first.xid, first.commit_lsn, first.end_lsn) == (7, "0/20", "0/28")
    assert [c.action for c in first.changes] == [Operation.INSERT, Operation.UPDATE]
    assert [c.lsn for c in first.changes] == ["0/10", "0/18"]
    assert {c.commit_lsn for c in first.changes} == {"0/20"}
    assert first.commit_ts == datetime(2026, 12, 2, 18, 27, 58, 607311, tzinfo=UTC)
    assert second.changes == ()
    assert second.truncated == ("u",)


def test_numbers_keep_their_digits_and_types_follow_pg8000():
    data = (
        '{"action":"I","xid":1,"timestamp":"' + TS + '","lsn":"0/1","schema":"public",'
        '"table":"t","columns":[{"name":"n","type":"numeric","value":3.10},'
        '{"name":"i","type":"bigint","value":9007199254740993}]}'
    )
    rows = [*txn(1, "0/2", "0/3")[:1], ("0/1", 1, data), txn(1, "0/2", "0/3")[-1]]

    ((change,),) = [t.changes for t in parse_transactions(rows)]

    assert str(change.columns["n"]) == "3.10"
    assert change.columns["i"] == 9007199254740993


@pytest.mark.parametrize(
    ("declared", "value", "expected"),
    [
        ("integer", 5, 5),
        ("numeric(10,2)", Decimal("1.50"), Decimal("1.50")),
        ("numeric", 3, Decimal(3)),
        ("double precision", Decimal("1.5"), 1.5),
        ("boolean", True, True),
        ("character varying(3)", "abc", "abc"),
        ("timestamp(3) without time zone", "2022-11-03 14:20:51.563", NAIVE),
        ("timestamp with time zone", TS, datetime(2026, 12, 2, 18, 27, 58, 607311, tzinfo=UTC)),
        ("date", "2024-01-02", date(2024, 1, 2)),
        ("text", None, None),
    ],
)  # fmt: skip
def test_values_convert_to_what_polling_reads(declared, value, expected):
    got = convert("t", "c", declared, value)
    assert got == expected
    assert type(got) is type(expected)


def test_an_unsupported_type_or_a_bad_value_names_the_column():
    with pytest.raises(UnsupportedTypeError, match=r"t\.c: type 'integer\[\]'"):
        convert("t", "c", "integer[]", [1])
    with pytest.raises(UnsupportedTypeError, match=r"t\.c \(boolean\)"):
        convert("t", "c", "boolean", "yes")
    assert type_name("timestamp(6) with time zone") == "timestamp with time zone"


def test_a_page_cut_inside_a_transaction_is_refused():
    rows = txn(1, "0/2", "0/3", {"action": "D", "lsn": "0/1", "table": "t", "identity": []})
    with pytest.raises(ValueError, match="inside a transaction"):
        parse_transactions(rows[:-1])


def test_an_update_without_a_toasted_column_names_it_unless_the_old_row_has_it():
    update = {
        "action": "U",
        "lsn": "0/1",
        "table": "t",
        "columns": [col("id", "integer", 1), col("v", "text", "new")],
        "identity": [col("id", "integer", 1)],
    }
    full = {**update, "identity": [*update["identity"], col("big", "text", "old big")]}
    rows = txn(1, "0/2", "0/3", update, full)

    (default, with_old) = parse_transactions(rows, {"t": ("id", "v", "big")})[0].changes

    assert default.columns == {"id": 1, "v": "new"}
    assert default.unchanged_toast == ("big",)
    assert with_old.columns == {"id": 1, "v": "new", "big": "old big"}
    assert with_old.unchanged_toast == ()
    assert staging_row(default) == {
        "id": 1,
        "v": "new",
        OP_COLUMN: "update",
        COMMIT_TS_COLUMN: datetime(2026, 12, 2, 18, 27, 58, 607311),  # naive UTC
        LSN_COLUMN: "0/2",
        XID_COLUMN: 1,
        TOAST_UNCHANGED_COLUMN: ["big"],
    }
    assert TOAST_UNCHANGED_COLUMN not in staging_row(with_old)


class FakeLog:
    """A ChangeReader over canned pages: what an ingest unit test would use."""

    def __init__(self, pages: list[ChangePage]) -> None:
        self.pages = pages
        self.advanced: list[str] = []

    def ensure_slot(self) -> bool:
        return False

    def current_lsn(self) -> str:
        return self.pages[-1].upto_lsn

    def peek(self, upto_lsn: str, max_changes: int) -> ChangePage:
        return self.pages[len(self.advanced)]

    def advance(self, lsn: str) -> str:
        self.advanced.append(lsn)
        return lsn

    def health(self) -> SlotHealth:
        raise NotImplementedError


def page(start: str, end: str, complete: bool) -> ChangePage:
    return ChangePage(slot="s", start_lsn=start, upto_lsn="0/90", end_lsn=end, complete=complete)


def test_consume_advances_after_each_page_is_handled_and_stops_when_complete():
    log = FakeLog([page("0/0", "0/30", False), page("0/30", "0/90", True)])
    reader: ChangeReader = log
    handled: list[str] = []

    pages = consume(reader, "0/90", 10, lambda p: handled.append(p.end_lsn))

    assert [p.end_lsn for p in pages] == ["0/30", "0/90"]
    assert handled == log.advanced == ["0/30", "0/90"]


def test_consume_does_not_advance_past_a_page_that_failed():
    log = FakeLog([page("0/0", "0/30", False), page("0/30", "0/90", True)])

    def fail(p: ChangePage) -> None:
        if p.end_lsn == "0/90":
            raise TimeoutError("S3 write did not return")

    with pytest.raises(TimeoutError):
        consume(log, "0/90", 10, fail)
    assert log.advanced == ["0/30"]


def test_a_column_the_registry_does_not_name_keeps_the_logs_value_where_no_converter_has_it():
    change = {
        "action": "I",
        "lsn": "0/10",
        "table": "t",
        "columns": [
            col("id", "integer", 1),
            col("meta", "jsonb", '{"a": 1}'),  # added at the source: no converter, kept
            col("seen", "timestamp without time zone", "2022-11-03 14:20:51.563"),
        ],
    }
    ((inserted,),) = [
        t.changes for t in parse_transactions(txn(7, "0/20", "0/28", change), {"t": ("id",)})
    ]
    assert inserted.columns == {"id": 1, "meta": '{"a": 1}', "seen": NAIVE}
    named = {**change, "columns": [col("id", "integer", 1), col("meta", "jsonb", "{}")]}
    with pytest.raises(UnsupportedTypeError, match=r"t\.meta: type 'jsonb'"):
        parse_transactions(txn(7, "0/20", "0/28", named), {"t": ("id", "meta")})
