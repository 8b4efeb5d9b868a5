"""Every real row of the three public snapshots validates under its table's schema."""

import pytest

from shared.rows import decode_rows, dump_rows, load_rows, validate_rows
from shared.tables import TABLES
from tests.realdata import DESIGN_2025_06, read_jsonl, read_parquet, require

pytestmark = pytest.mark.realdata

JSONL_TABLES = sorted(set(TABLES) - {"payment"})  # payment.json was too large to snapshot


@pytest.mark.parametrize("table", JSONL_TABLES)
def test_2024_11_14_json_lines_validate(table):
    rows = read_jsonl(table)
    report = validate_rows(TABLES[table], rows, table)
    assert report.problems == []
    assert len(report.rows) == len(rows) > 0


@pytest.mark.parametrize("table", sorted(TABLES))
def test_2024_11_15_parquet_validates_and_round_trips(table):
    spec = TABLES[table]
    rows = read_parquet(table)
    report = validate_rows(spec, rows, table)
    assert report.problems == []
    data = dump_rows(spec, report.rows)
    assert load_rows(spec, data, table).rows == report.rows


def test_2025_06_design_array_validates():
    path = require(DESIGN_2025_06)
    report = validate_rows(TABLES["design"], decode_rows(path.read_bytes(), str(path)), "d")
    assert report.problems == []
    assert len(report.rows) == 600


def test_real_money_keeps_its_text():
    rows = read_jsonl("sales_order")
    spec = TABLES["sales_order"]
    report = validate_rows(spec, rows, "sales_order")
    first = dump_rows(spec, report.rows[:1]).decode()
    assert f'"unit_price":{rows[0]["unit_price"]}' in first
