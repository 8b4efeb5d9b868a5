"""Hostile files: valid JSON that would crash a reader, fill a disk or mean two things.

Each becomes a `RowProblem` of its row (file, row, key, field, value), or, where no row can be
blamed, a `FileFormatError` naming the file; never an exception of another kind. And whatever
the validator accepts, the writer writes and reads back exactly.
"""

import json
import typing
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ops.cli import app
from shared.history import HistoryRow, dump_history, load_history
from shared.rows import (
    FileFormatError,
    RowProblem,
    decode_rows,
    dump_rows,
    load_rows,
    row_json,
    validate_rows,
)
from shared.tables import TABLES
from shared.types import INT64_MAX, INT64_MIN

STAFF = TABLES["staff"]
PAYMENT = TABLES["payment"]
TRANSACTION = TABLES["transaction"]
SOURCE = "staging/staff.json"


def staff_text(**raw: str) -> str:
    """A staff row as JSON text, each given column as raw JSON text (not a Python value)."""
    columns = {
        "staff_id": "7",
        "first_name": '"Ana"',
        "last_name": '"Zieme"',
        "department_id": "2",
        "email_address": '"ana.zieme@terrifictotes.com"',
        "created_at": '"2022-11-03T14:20:51.563000"',
        "last_updated": '"2022-11-03T14:20:51.563000"',
    } | raw
    return "{" + ",".join(f"{json.dumps(name)}:{text}" for name, text in columns.items()) + "}"


def payment_text(amount: str) -> str:
    return (
        '{"payment_id":1,"created_at":"2022-11-03T14:20:52.186","last_updated":'
        '"2022-11-03T14:20:52.186","transaction_id":1,"counterparty_id":2,'
        f'"payment_amount":{amount},"currency_id":1,"payment_type_id":1,"paid":false,'
        '"payment_date":"2022-11-08","company_ac_number":12345678,'
        '"counterparty_ac_number":87654321}'
    )


LONG_INTEGER = "9" * 5000  # more digits than int() converts (4,300)

# (table, the row's JSON text, the key the problem names (None: the key is the bad value),
#  the field, a piece of the message, a piece of the value)
HOSTILE = {
    "lone surrogate": (
        STAFF,
        staff_text(first_name=r'"An\ud800a"'),
        7,
        "first_name",
        "lone surrogate",
        r"'An\ud800a'",
    ),
    "lone low surrogate at the end": (
        STAFF,
        staff_text(email_address=r'"a@b.c\udfff"'),
        7,
        "email_address",
        "cannot be written as UTF-8",
        r"\udfff",
    ),
    "lone surrogate in a column name": (
        STAFF,
        staff_text(**{"\ud800shoe": "1"}),  # json.dumps writes the name as "\ud800shoe"
        7,
        r"\ud800shoe",
        "column name is not valid Unicode",
        r"'\ud800shoe'",
    ),
    "integer of 5000 digits": (
        STAFF,
        staff_text(department_id=LONG_INTEGER),
        7,
        "department_id",
        "number out of range",
        "(5000 characters)",
    ),
    "primary key of 5000 digits": (
        STAFF,
        staff_text(staff_id="-" + LONG_INTEGER),
        None,
        "staff_id",
        "number out of range",
        "(5001 characters)",
    ),
    "exponent beyond Decimal's": (
        PAYMENT,
        payment_text("1e9999999999999999999"),
        1,
        "payment_amount",
        "number out of range",
        "1e9999999999999999999",
    ),
    "money of a gigabyte of zeros": (
        PAYMENT,
        payment_text("1E+999999999"),
        1,
        "payment_amount",
        "money out of range",
        "Decimal('1E+999999999')",
    ),
    "money of a gigabyte of fraction zeros": (
        PAYMENT,
        payment_text("0E-999999999"),
        1,
        "payment_amount",
        "money out of range",
        "Decimal('0E-999999999')",
    ),
    "money just past the bound": (
        PAYMENT,
        payment_text("1" + "0" * 101),
        1,
        "payment_amount",
        "money out of range",
        "1000",
    ),
    "integer just past the warehouse's range": (
        STAFF,
        staff_text(department_id=str(INT64_MAX + 1)),
        7,
        "department_id",
        "integer out of range",
        str(INT64_MAX + 1),
    ),
    "integer just below the warehouse's range": (
        STAFF,
        staff_text(department_id=str(INT64_MIN - 1)),
        7,
        "department_id",
        "integer out of range",
        str(INT64_MIN - 1),
    ),
    "primary key past the warehouse's range": (
        STAFF,
        staff_text(staff_id=str(2**64)),
        None,
        "staff_id",
        "integer out of range",
        str(2**64),
    ),
    "duplicated column": (
        STAFF,
        staff_text()[:-1] + ',"first_name":"Bob"}',
        7,
        "first_name",
        "column given more than once",
        "['Ana', 'Bob']",
    ),
    "duplicated primary key": (
        STAFF,
        '{"staff_id":1,' + staff_text(staff_id="2")[1:],
        None,
        "staff_id",
        "column given more than once",
        "[1, 2]",
    ),
}


def only_problem(spec, text: str, source: str = SOURCE) -> RowProblem:
    report = load_rows(spec, f"[\n{text}\n]\n".encode(), source)
    assert report.rows == []
    (problem,) = report.problems
    return problem


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_row_is_a_problem_naming_file_row_key_field_and_value(case):
    spec, text, key, field, message, value = HOSTILE[case]
    good = only_problem(spec, text, "staging/f.json")
    assert good.row_index == 0
    assert good.primary_key == key
    assert good.field == field
    assert message in good.message
    assert good.value is not None
    assert value in good.value
    shown = str(good)
    assert shown.startswith(f"staging/f.json[0] table {spec.name}")
    assert ("" if key is None else f" key={key}") + f" field {field}: " in shown
    assert value in shown


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_problem_is_short_and_writable_as_utf8_and_json(case):
    spec, text, *_ = HOSTILE[case]
    problem = only_problem(spec, text)
    assert len(str(problem)) < 400  # never the gigabyte, nor the 5000 digits
    str(problem).encode("utf-8")  # the quarantine report and the CLI write it
    assert RowProblem.model_validate_json(problem.model_dump_json()) == problem


@pytest.mark.parametrize("case", list(HOSTILE))
def test_the_other_rows_of_the_file_still_pass(case):
    spec, text, *_ = HOSTILE[case]
    good = staff_text(staff_id="8") if spec is STAFF else payment_text("3.94")
    report = load_rows(spec, f"[{good},\n{text},\n{good}]".encode(), SOURCE)
    assert [p.row_index for p in report.problems] == [1]
    assert len(report.rows) == 2


def test_the_bounds_themselves_are_accepted_and_written_exactly():
    for bound in (INT64_MIN, INT64_MAX):
        (row,) = load_rows(STAFF, f"[{staff_text(staff_id=str(bound))}]".encode(), SOURCE).rows
        assert row_json(STAFF, row).startswith(f'{{"staff_id":{bound},')
    for amount in ("9" * 101, "-9.99E+100", "1E-100", "0.00", "-0"):
        report = load_rows(PAYMENT, f"[{payment_text(amount)}]".encode(), SOURCE)
        assert report.ok, report.problems
        again = load_rows(PAYMENT, dump_rows(PAYMENT, report.rows), SOURCE)
        assert again.rows == report.rows


def test_a_duplicated_column_in_json_lines_is_a_problem_too():
    lines = staff_text(staff_id="1") + "\n" + staff_text()[:-1] + ',"last_name":"Z"}'
    raws = decode_rows(lines.encode(), "f.jsonl", allow_json_lines=True)
    report = validate_rows(STAFF, raws, "f.jsonl")
    assert [str(p) for p in report.problems] == [
        "f.jsonl[1] table staff key=7 field last_name: column given more than once in the row "
        "(JSON keeps only one of the values) (value ['Zieme', 'Z'])"
    ]


def test_several_duplicates_and_other_problems_of_one_row_are_all_reported():
    text = staff_text(department_id='"two"')[:-1] + ',"first_name":"B","first_name":"C"}'
    report = load_rows(STAFF, f"[{text}]".encode(), SOURCE)
    assert sorted((p.field, p.value) for p in report.problems) == [
        ("department_id", "'two'"),
        ("first_name", "['Ana', 'B', 'C']"),
    ]


def test_a_file_that_gives_the_marker_key_itself_is_refused_not_trusted():
    text = staff_text(**{"\u0000duplicated columns": '"x"'})
    problem = only_problem(STAFF, text)
    assert problem.message.startswith("unknown column")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (LONG_INTEGER.encode(), "expected a JSON array of rows, got a number"),
        (b"1e9999999999999999999", "got a number"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "nested too deeply"),
        (b"[1, 2", "not valid JSON"),
        (b"[\xed\xa0\x80]", "not UTF-8"),  # a surrogate encoded as bytes is not UTF-8
    ],
)
def test_what_no_row_can_be_blamed_for_is_a_file_format_error_naming_the_file(data, reason):
    with pytest.raises(FileFormatError, match=reason) as caught:
        decode_rows(data, SOURCE, allow_json_lines=True)
    assert str(caught.value).startswith(f"{SOURCE}: ")


def test_json_lines_nested_too_deeply_names_the_file_and_line():
    data = staff_text().encode() + b"\n" + b'{"a":' * 100_000 + b"}" * 100_000
    with pytest.raises(FileFormatError, match=r"line 2 is not valid JSON: nested too deeply"):
        decode_rows(data, "f.jsonl", allow_json_lines=True)


def test_rows_given_as_python_values_are_checked_the_same():
    """Ingest validates the database's rows, not JSON: the same types hold them."""
    raw = json.loads(staff_text())
    report = validate_rows(
        STAFF,
        [
            raw | {"staff_id": 10**5000},
            raw | {"first_name": "\udc80"},
            raw | {"department_id": -(2**70)},
        ],
        "postgresql:staff",
    )
    assert [(p.row_index, p.field) for p in report.problems] == [
        (0, "staff_id"),
        (1, "first_name"),
        (2, "department_id"),
    ]
    assert "bits" in (report.problems[0].value or "")  # an int too long even to repr


def test_subclasses_of_the_column_types_are_written_as_the_types_themselves():
    class Stamp(datetime):
        pass

    class Amount(Decimal):
        pass

    raw = json.loads(payment_text("1"), parse_float=Decimal)
    raw |= {"created_at": Stamp(2022, 11, 3, 14, 20), "payment_amount": Amount("3.90")}
    (row,) = validate_rows(PAYMENT, [raw], "postgresql:payment").rows
    assert '"created_at":"2022-11-03T14:20:00.000000"' in row_json(PAYMENT, row)
    assert '"payment_amount":3.9,' in row_json(PAYMENT, row)


def test_problems_name_a_file_whose_name_is_not_utf8_readably():
    problem = only_problem(STAFF, staff_text(department_id='"x"'), "staging/\udcff.json")
    assert problem.source == r"staging/\udcff.json"
    assert str(FileFormatError("a\udcff", "b")) == r"a\udcff: b"


def test_history_and_latest_still_read_and_refuse_duplicates():
    row = load_rows(STAFF, f"[{staff_text()}]".encode(), SOURCE).rows[0]
    item = HistoryRow(row, datetime(2022, 11, 4), "batch-1")
    data = dump_history(STAFF, [item])
    assert load_history(STAFF, data, "history/staff.json") == [item]
    doubled = data.replace(b'"_batch":"batch-1"', b'"_batch":"batch-1","_batch":"batch-2"')
    with pytest.raises(FileFormatError, match=r"history/staff\.json: .*_batch.*more than once"):
        load_history(STAFF, doubled, "history/staff.json")


# ---- ingestctl validate ------------------------------------------------------------------

runner = CliRunner()


@pytest.mark.parametrize("case", list(HOSTILE))
@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_ingestctl_validate_prints_the_problem_and_exits_1(tmp_path, case, suffix):
    spec, text, key, field, _, value = HOSTILE[case]
    path = tmp_path / f"hostile{suffix}"
    path.write_text(f"[{text}]" if suffix == ".json" else text, encoding="ascii")
    result = runner.invoke(app, ["validate", spec.name, str(path)])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    shown = " ".join(result.output.split())  # the console wraps long lines
    assert f"hostile{suffix}[0] table {spec.name}" in shown
    assert ("" if key is None else f"key={key} ") + f"field {field}" in shown
    assert " ".join(value.split()) in shown
    assert "1 rows, 0 valid, 1 invalid" in shown


def test_ingestctl_validate_prints_markup_in_a_file_as_text(tmp_path):
    (tmp_path / "[bold").mkdir()
    path = tmp_path / "[bold" / "x].json"  # the path holds "[/x]", a closing tag to rich
    path.write_text(f"[{staff_text(first_name='1', **{'[/oops]': '2'})}]")
    result = runner.invoke(app, ["validate", "staff", str(path)])
    assert result.exit_code == 1, result.output
    assert "field [/oops]: unknown column" in result.output
    assert "[bold/x].json: 1 rows, 0 valid, 1 invalid" in result.output


def test_ingestctl_validate_names_a_file_nothing_can_be_read_from(tmp_path):
    path = tmp_path / "deep.json"
    path.write_bytes(b"[" * 100_000 + b"]" * 100_000)
    result = runner.invoke(app, ["validate", "staff", str(path)])
    assert result.exit_code == 1
    assert "deep.json: not valid JSON: nested too deeply" in " ".join(result.output.split())


# ---- whatever is accepted is written and read back exactly ---------------------------------

SURROGATES = st.integers(0xD800, 0xDFFF).map(chr)
TEXT = st.text(max_size=12)  # any character but a surrogate (Hypothesis leaves them out)
HOSTILE_TEXT = st.builds(lambda a, s, b: a + s + b, TEXT, SURROGATES, TEXT)
INTEGERS = st.integers(INT64_MIN, INT64_MAX)
HOSTILE_INTEGERS = st.one_of(
    st.integers(),
    st.integers(-(10**200), 10**200),
    st.sampled_from([INT64_MIN - 1, INT64_MIN, INT64_MAX, INT64_MAX + 1]),
)
MONEY = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False, places=2),
    st.decimals(-(10**12), 10**12),
    st.integers(-(10**100), 10**100),
    st.sampled_from([Decimal(t) for t in ("9.99E+100", "-1E-100", "-0", "0E+7", "1.10")]),
)
HOSTILE_MONEY = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False),  # any exponent
    st.integers(-(10**120), 10**120),
    st.sampled_from(
        [Decimal(t) for t in ("1E+101", "1E-101", "0E-200", "1E+999999999", "0E-999999999")]
        + [Decimal("Infinity"), "3.5", 3.5, True]
    ),
)
STAMPS = st.datetimes(datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59, 999999))
TIMESTAMPS = st.one_of(
    STAMPS.map(lambda d: d.isoformat()),
    STAMPS.map(lambda d: d.isoformat(sep=" ", timespec="milliseconds")),
)
DATES = st.dates().map(lambda d: d.isoformat())
ANYTHING = st.one_of(HOSTILE_TEXT, HOSTILE_INTEGERS, HOSTILE_MONEY, TEXT, st.none(), st.booleans())


def column_values(spec, name: str, hostile: bool) -> st.SearchStrategy[Any]:
    """Values for one column: of its type, or (`hostile`) of its type and of anything else,
    within range and out of it."""
    field = spec.row_model.model_fields[name]
    nullable = type(None) in typing.get_args(field.annotation)
    text = str(field.annotation) + str(field.metadata)
    values: st.SearchStrategy[Any]
    if name in ("created_at", "last_updated"):
        values = TIMESTAMPS
    elif name.endswith("_date"):
        values = DATES
    elif "Decimal" in text:
        values = st.one_of(MONEY, HOSTILE_MONEY) if hostile else MONEY
    elif "bool" in text:
        values = st.booleans()
    elif "int" in text:
        values = st.one_of(INTEGERS, HOSTILE_INTEGERS) if hostile else INTEGERS
    else:
        values = st.one_of(TEXT, HOSTILE_TEXT) if hostile else TEXT
    values = st.one_of(values, ANYTHING) if hostile else values
    return st.one_of(st.none(), values) if nullable else values


@st.composite
def raw_rows(draw, spec) -> list[tuple[str, Any]]:
    """A row as (column, value) pairs: every column, a few of them hostile, maybe one given
    twice or one unknown."""
    spoilt = draw(st.sets(st.sampled_from(spec.columns), max_size=2))
    pairs = [(name, draw(column_values(spec, name, name in spoilt))) for name in spec.columns]
    if draw(st.integers(0, 9)) == 0:
        name = draw(st.sampled_from([*spec.columns, "shoe_size", "\ud800"]))
        pairs.append(
            (name, draw(column_values(spec, name, True) if name in spec.columns else ANYTHING))
        )
    return pairs


def json_text(pairs: list[tuple[str, Any]]) -> str:
    """A JSON object with these pairs in order, Decimals as their exact number text."""

    def value(v: Any) -> str:
        return str(v) if isinstance(v, Decimal) else json.dumps(v)  # ensure_ascii: \ud800

    return "{" + ",".join(f"{json.dumps(k)}:{value(v)}" for k, v in pairs) + "}"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_accepted_row_round_trips_and_any_other_is_a_problem(data):
    spec = data.draw(st.sampled_from([STAFF, PAYMENT, TRANSACTION, TABLES["address"]]))
    rows = data.draw(st.lists(raw_rows(spec), min_size=1, max_size=3))
    text = "[" + ",\n".join(json_text(pairs) for pairs in rows) + "]"
    report = load_rows(spec, text.encode("ascii"), SOURCE)  # never raises
    assert len(report.rows) + len({p.row_index for p in report.problems}) == len(rows)
    for problem in report.problems:
        str(problem).encode("utf-8")
        assert len(problem.value or "") < 200
    dumped = dump_rows(spec, report.rows)  # never raises
    again = load_rows(spec, dumped, "latest/x.json")
    assert again.ok, again.problems
    assert again.rows == report.rows
    assert dump_rows(spec, again.rows) == dumped
    for row in report.rows:
        assert row_json(spec, row).encode("utf-8").decode("utf-8") == row_json(spec, row)


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), HOSTILE_INTEGERS, HOSTILE_TEXT, TEXT, MONEY),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(TEXT, HOSTILE_TEXT), inner, max_size=3),
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from([*STAFF.columns, "x"]), JSON_VALUES)) | JSON_VALUES)
def test_any_json_decodes_to_rows_or_a_file_format_error_and_validates_without_raising(value):
    text = json.dumps(value, default=str)
    try:
        raws = decode_rows(text.encode(), SOURCE, allow_json_lines=True)
    except FileFormatError:
        return
    report = validate_rows(STAFF, raws, SOURCE)
    for problem in report.problems:
        str(problem).encode("utf-8")
    dump_rows(STAFF, report.rows).decode("utf-8")
