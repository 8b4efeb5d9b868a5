"""The warehouse built from the real 2024-11-15 snapshot (merged in as baselines)."""

import pytest

from services.transform.warehouse import FOREIGN_KEYS, WAREHOUSE_TABLES
from shared.tables import TABLES
from tests.realdata import read_parquet

pytestmark = pytest.mark.realdata

EXPECTED_ROWS = {
    # one fact row per version: the snapshot holds one version of each row (no history)
    "fact_sales_order": 11_187,
    "fact_purchase_order": 4_649,
    "fact_payment": 15_836,
    "dim_design": 473,
    "dim_location": 30,
    "dim_staff": 20,
    "dim_counterparty": 20,
    "dim_currency": 3,
    "dim_payment_type": 4,
    "dim_transaction": 15_836,
}


@pytest.fixture
def real_chain(chain):
    source = {table: read_parquet(table) for table in TABLES}  # skips when absent
    for table, rows in source.items():
        chain.merge(table, rows, baseline=True)
    chain.deliver()
    return chain


def test_real_snapshot_gives_one_row_per_source_row_and_every_key_resolves(real_chain):
    tables = {name: real_chain.table(name) for name in WAREHOUSE_TABLES}
    assert {n: len(tables[n]) for n in EXPECTED_ROWS} == EXPECTED_ROWS
    for fact, keys in FOREIGN_KEYS.items():
        for column, dim in keys.items():
            known = {r[WAREHOUSE_TABLES[dim].key] for r in tables[dim]}
            missing = {r[column] for r in tables[fact]} - known
            assert missing == set(), f"{fact}.{column} -> {dim}: {sorted(missing)[:5]}"
    days = [r["date_id"] for r in tables["dim_date"]]
    assert days == sorted(days)
    assert (days[-1] - days[0]).days + 1 == len(days)  # a calendar without gaps
    assert str(days[0]) == "2022-11-03"
    assert len({r["sales_record_id"] for r in tables["fact_sales_order"]}) == 11_187
    by_staff = {r["staff_id"]: r for r in tables["dim_staff"]}
    assert all(r["department_name"] and r["location"] for r in by_staff.values())

    # A rebuild from scratch writes the same bytes.
    incremental = real_chain.files()
    for key in incremental:
        real_chain.store.delete(key)
    real_chain.service.rebuild()
    assert real_chain.files() == incremental
