"""Facts keep every version with stable record ids; replays and rebuilds change nothing."""

import io
from datetime import timedelta

import pyarrow.parquet as pq

from ops.sample_data import SampleDatabase
from services.transform.warehouse import FOREIGN_KEYS, WAREHOUSE_TABLES
from shared.layout import warehouse_manifest_key

ORDER = 5


def load_baselines(chain, database):
    for table, rows in database.snapshot().items():
        chain.merge(table, rows, baseline=True)
    chain.deliver()


def changed_order(chain, order, location, minutes):
    (row,) = [r for r in chain_latest(chain, "sales_order") if r.sales_order_id == order]
    return row.model_copy(
        update={
            "agreed_delivery_location_id": location,
            "last_updated": row.last_updated + timedelta(minutes=minutes),
        }
    ).model_dump()


def chain_latest(chain, table):
    from shared.reader import read_latest
    from shared.tables import TABLES

    return read_latest(chain.store, TABLES[table]).rows


def test_an_order_changed_twice_has_three_fact_rows_with_stable_ids(chain):
    database = SampleDatabase(seed=11, orders=30)
    load_baselines(chain, database)
    first = [r for r in chain.table("fact_sales_order") if r["sales_order_id"] == ORDER]
    assert len(first) == 1

    chain.merge("sales_order", [changed_order(chain, ORDER, 3, 30)])
    chain.deliver()
    chain.merge("sales_order", [changed_order(chain, ORDER, 5, 60)])
    chain.deliver()

    facts = chain.table("fact_sales_order")
    versions = [r for r in facts if r["sales_order_id"] == ORDER]
    assert len(versions) == 3
    assert len({r["sales_record_id"] for r in versions}) == 3
    assert versions[0]["sales_record_id"] == first[0]["sales_record_id"]
    assert [r["agreed_delivery_location_id"] for r in versions][1:] == [3, 5]
    assert len(facts) == len(database.rows("sales_order")) + 2
    before_files = chain.files()
    before_ids = sorted(r["sales_record_id"] for r in facts)

    # Every event again, in reverse order: no new rows, the same ids, the same bytes.
    for body in reversed(chain.delivered):
        assert chain.invoke([body]) == []
    assert chain.files() == before_files
    assert sorted(r["sales_record_id"] for r in chain.table("fact_sales_order")) == before_ids

    # From scratch: remove the warehouse, rebuild, compare byte for byte.
    for key in before_files:
        chain.store.delete(key)
    assert chain.files() == {}
    chain.service.rebuild()
    assert chain.files() == before_files


def test_events_out_of_order_build_what_an_in_order_pass_builds(chain):
    database = SampleDatabase(seed=12, orders=20)
    load_baselines(chain, database)
    chain.merge("sales_order", [changed_order(chain, 2, 7, 10)])
    chain.merge("sales_order", [changed_order(chain, 2, 9, 20)])
    chain.merge("sales_order", [changed_order(chain, 3, 9, 20)])
    bodies = [m["Body"] for m in chain.receive()]
    assert len(bodies) == 3
    for body in reversed(bodies):
        assert chain.invoke([body]) == []
    incremental = chain.files()
    for key in incremental:
        chain.store.delete(key)
    chain.service.rebuild()
    assert chain.files() == incremental
    assert len([r for r in chain.table("fact_sales_order") if r["sales_order_id"] == 2]) == 3


def test_every_fact_key_resolves_and_the_files_are_plain_parquet(chain):
    load_baselines(chain, SampleDatabase(seed=13, orders=25))
    for fact, keys in FOREIGN_KEYS.items():
        rows = chain.table(fact)
        assert rows
        for column, dim in keys.items():
            dim_key = WAREHOUSE_TABLES[dim].key
            known = {r[dim_key] for r in chain.table(dim)}
            missing = {r[column] for r in rows} - known
            assert missing == set(), f"{fact}.{column} -> {dim}: {sorted(missing)[:5]}"
    manifest = chain.store.get(warehouse_manifest_key("fact_sales_order")).data
    assert b"created_month=" in manifest
    files = chain.files()
    key = next(k for k in files if k.startswith("warehouse/fact_sales_order/created_month="))
    assert key.endswith("/part-0.parquet")
    schema = pq.read_schema(io.BytesIO(files[key]))
    assert schema.field("unit_price").type.scale == 2
    assert str(schema.field("created_date").type) == "date32[day]"


def test_a_warehouse_updated_event_follows_each_merge_event(chain):
    database = SampleDatabase(seed=14, orders=10)
    load_baselines(chain, database)
    updates = chain.updates()
    assert len(updates) == len(chain.delivered) == 11
    by_cause = {u["detail"]["cause"]: u["detail"] for u in updates}
    sales = next(d for c, d in by_cause.items() if ":sales_order:" in c)
    assert sales["tables"]["fact_sales_order"] == len(database.rows("sales_order")) > 0
    assert sales["event_id"] == f"WarehouseUpdated:{sales['cause']}"
    assert {u["source"] for u in updates} == {"ingest.transform"}
