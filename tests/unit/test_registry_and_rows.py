import json
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ops.sample_data import SampleDatabase
from shared.rows import FileFormatError, decode_rows, dump_rows, load_rows, row_json, validate_rows
from shared.tables import TABLES, UnknownTableError, get_table

TOTESYS = {
    "address", "counterparty", "currency", "department", "design", "staff",
    "sales_order", "payment", "payment_type", "purchase_order", "transaction",
}  # fmt: skip


def test_registry_holds_the_eleven_totesys_tables_with_their_keys():
    assert set(TABLES) == TOTESYS
    for name, spec in TABLES.items():
        assert spec.primary_key == f"{name}_id"
        assert spec.columns[0] == spec.primary_key
        assert {"created_at", "last_updated"} <= set(spec.columns)


def test_unknown_table_is_named_in_the_error():
    with pytest.raises(UnknownTableError, match="'stafff'"):
        get_table("stafff")


def good_staff(**changes):
    row = {
        "staff_id": 7,
        "first_name": "Ana",
        "last_name": "Zieme",
        "department_id": 2,
        "email_address": "ana.zieme@terrifictotes.com",
        "created_at": "2022-11-03T14:20:51.563000",
        "last_updated": "2022-11-03 14:20:51.563",
    }
    row.update(changes)
    return row


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"department_id": "two"}, "department_id", "valid integer"),
        ({"department_id": Decimal("2.5")}, "department_id", "valid integer"),
        ({"first_name": None}, "first_name", "valid string"),
        ({"last_updated": "2022-13-03T00:00:00"}, "last_updated", "not a real time"),
        ({"nickname": "Annie"}, "nickname", "unknown column"),
    ],
)
def test_a_bad_row_names_table_row_key_field_and_value(change, field, message):
    rows = [good_staff(staff_id=1), good_staff(**change)]
    report = validate_rows(TABLES["staff"], rows, "staging/staff.json")
    assert len(report.rows) == 1
    [problem] = report.problems
    assert (problem.table, problem.source, problem.row_index) == ("staff", "staging/staff.json", 1)
    assert problem.primary_key == 7
    assert problem.field == field
    assert message in problem.message
    assert str(change[field])[:5] in (problem.value or "")
    assert "staging/staff.json[1] table staff key=7 field " + field in str(problem)


def test_bad_date_and_missing_primary_key_and_null_not_null_are_reported():
    order = {
        "sales_order_id": 3,
        "created_at": "2022-11-03T14:20:52.186000",
        "last_updated": "2022-11-03T14:20:52.186000",
        "design_id": 3,
        "staff_id": 19,
        "counterparty_id": 8,
        "units_sold": 42972,
        "unit_price": Decimal("3.94"),
        "currency_id": 2,
        "agreed_delivery_date": "2022-11-31",
        "agreed_payment_date": "2022-11-08",
        "agreed_delivery_location_id": 8,
    }
    no_key = {k: v for k, v in order.items() if k != "sales_order_id"}
    report = validate_rows(TABLES["sales_order"], [order, no_key], "f.json")
    by_row = {(p.row_index, p.field): p for p in report.problems}
    assert by_row[(0, "agreed_delivery_date")].primary_key == 3
    assert "not a real day" in by_row[(0, "agreed_delivery_date")].message
    missing = by_row[(1, "sales_order_id")]
    assert missing.primary_key is None
    assert missing.message == "required column is missing"


def test_every_problem_of_a_file_is_reported_not_just_the_first():
    rows = [good_staff(staff_id=i, first_name=None, last_name=5) for i in range(3)]
    report = validate_rows(TABLES["staff"], [*rows, "not a row"], "f.json")
    assert len(report.problems) == 7
    assert report.problems[-1].message == "row must be a JSON object, got a string"


def test_nullable_columns_must_still_be_present():
    row = {
        "address_id": 1,
        "address_line_1": "1 Mill Lane",
        "city": "Leeds",
        "postal_code": "28441",
        "country": "UK",
        "phone": "1803 637401",
        "district": None,
        "created_at": "2022-11-03T14:20:49.962000",
        "last_updated": "2022-11-03T14:20:49.962",
    }
    report = validate_rows(TABLES["address"], [row], "a.json")
    assert [(p.field, p.message) for p in report.problems] == [
        ("address_line_2", "required column is missing")
    ]


def test_money_given_as_a_json_number_keeps_its_decimal_text():
    payment = (
        b'[{"payment_id": 1, "created_at": "2022-11-03T14:20:52.186", '
        b'"last_updated": "2022-11-03T14:20:52.186", "transaction_id": 1, "counterparty_id": 2, '
        b'"payment_amount": 3.94, "currency_id": 1, "payment_type_id": 1, "paid": false, '
        b'"payment_date": "2022-11-08", "company_ac_number": 12345678, '
        b'"counterparty_ac_number": 87654321}]'
    )
    spec = TABLES["payment"]
    report = load_rows(spec, payment, "p.json")
    assert report.ok
    assert report.rows[0].payment_amount == Decimal("3.94")  # type: ignore[attr-defined]
    assert '"payment_amount":3.94,' in row_json(spec, report.rows[0])


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xff\xfe[]", "not UTF-8"),
        (b"[{", "not valid JSON"),
        (b'{"staff_id": 1}', "expected a JSON array of rows, got an object"),
        (b'"rows"', "got a string"),
    ],
)
def test_files_that_are_not_arrays_of_rows_are_refused_with_the_file_named(data, reason):
    with pytest.raises(FileFormatError, match=reason) as caught:
        decode_rows(data, "staging/staff.json")
    assert str(caught.value).startswith("staging/staff.json: ")


@pytest.mark.parametrize("data", [b"", b"  \n", b"[]", b"\xef\xbb\xbf[]"])
def test_empty_files_decode_to_no_rows(data):
    assert decode_rows(data, "f.json") == []


def test_json_lines_are_read_where_allowed():
    data = (json.dumps(good_staff(staff_id=1)) + "\n" + json.dumps(good_staff(staff_id=2))).encode()
    assert [r["staff_id"] for r in decode_rows(data, "f.jsonl", allow_json_lines=True)] == [1, 2]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_canonical_form_round_trips_with_stable_bytes(seed):
    database = SampleDatabase(seed, orders=5, designs=3)
    database.advance(sales=2, purchases=1, payments_paid=2)
    for name, spec in TABLES.items():
        first = validate_rows(spec, database.rows(name), name)
        assert first.ok, first.problems
        data = dump_rows(spec, first.rows)
        again = load_rows(spec, data, name)
        assert again.ok
        assert again.rows == first.rows
        assert dump_rows(spec, again.rows) == data


def test_the_same_row_in_another_text_form_gives_the_same_bytes():
    spec = TABLES["staff"]
    a = validate_rows(spec, [good_staff(last_updated="2022-12-15T11:25:10")], "a").rows[0]
    b = validate_rows(spec, [good_staff(last_updated="2022-12-15 11:25:10.000")], "b").rows[0]
    assert row_json(spec, a) == row_json(spec, b)
    assert '"last_updated":"2022-12-15T11:25:10.000000"' in row_json(spec, a)
