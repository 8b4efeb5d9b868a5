"""The schema state: added columns recorded once, in order, against a concurrent add; rows of
the extended model; source values as an added column holds them."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time
from decimal import Decimal
from uuid import UUID

import pytest

from shared.rows import row_json, validate_rows
from shared.schema_state import (
    TableSchema,
    add_columns,
    added_columns,
    added_value_of,
    effective_spec,
    schema_key,
    with_columns,
)
from shared.tables import TABLES
from tests.fakes import MemoryStore

SPEC = TABLES["payment_type"]
AT = datetime(2026, 12, 3, 6, 0, tzinfo=UTC)
ROW = {
    "payment_type_id": 1,
    "payment_type_name": "CARD",
    "created_at": "2024-01-01T00:00:00",
    "last_updated": "2024-01-01T00:00:00",
}


def test_extending_twice_gives_the_class_extending_once_gives_and_columns_follow_the_models():
    once = with_columns(SPEC, ["note", "rank"])
    twice = with_columns(with_columns(SPEC, ["note"]), ["rank", "note"])
    assert once.row_model is twice.row_model
    assert once.columns == (*SPEC.columns, "note", "rank")
    assert added_columns(twice) == ("note", "rank")
    assert with_columns(SPEC, []) is SPEC
    (row,) = validate_rows(once, [ROW], "t").rows  # a row from before: null
    assert json.loads(row_json(once, row))["note"] is None
    (other,) = validate_rows(twice, [ROW], "t").rows
    assert row == other


def test_an_added_column_takes_json_values_and_names_what_it_cannot_hold():
    spec = with_columns(SPEC, ["note"])
    good = [ROW | {"note": v} for v in ("x", 3, Decimal("1.50"), True, None)]
    report = validate_rows(spec, good, "t")
    assert [json.loads(row_json(spec, r), parse_float=Decimal)["note"] for r in report.rows] == [
        "x",
        3,
        Decimal("1.5"),
        True,
        None,
    ]
    bad = validate_rows(spec, [ROW | {"note": {"a": 1}}, ROW | {"note": 2**70}], "t")
    assert [(p.row_index, p.field) for p in bad.problems] == [(0, "note"), (1, "note")]
    assert "an added column holds text" in bad.problems[0].message


def test_columns_are_recorded_once_in_order_and_a_concurrent_add_is_kept():
    store = MemoryStore()
    assert effective_spec(store, SPEC) is SPEC  # no state: the registry's
    raced: list[str] = []

    def another_merge_adds_first(operation: str, key: str) -> None:
        if operation == "put" and key == schema_key(SPEC.name) and not raced:
            raced.append(key)
            add_columns(store, SPEC, ["rank"], "b0", AT)

    store.hook = another_merge_adds_first
    recorded = add_columns(store, SPEC, ["note", "rank"], "b1", AT)
    store.hook = None
    assert recorded.columns == (*SPEC.columns, "rank", "note")
    schema = TableSchema.model_validate_json(store.get(schema_key(SPEC.name)).data)
    assert [(c.name, c.batch) for c in schema.added] == [("rank", "b0"), ("note", "b1")]
    assert add_columns(store, SPEC, ["note"], "b2", AT).row_model is recorded.row_model
    assert len(store.versions(schema_key(SPEC.name))) == 2  # the repeat wrote nothing
    assert effective_spec(store, SPEC).row_model is recorded.row_model


@pytest.mark.parametrize(
    ("value", "held"),
    [
        (datetime(2026, 1, 2, 3, 4, 5, 6), "2026-01-02T03:04:05.000006"),
        (date(2026, 1, 2), "2026-01-02"),
        (time(3, 4), "03:04:00"),
        (1.25, Decimal("1.25")),
        (float("nan"), "nan"),
        ({"a": [1, 2]}, '{"a": [1, 2]}'),
        (b"\x01\xff", "\\x01ff"),
        (UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        (7, 7),
        ("text", "text"),
        (None, None),
    ],
)  # fmt: skip
def test_source_values_become_what_an_added_column_holds(value, held):
    got = added_value_of(value)
    assert got == held
    assert type(got) is type(held)
