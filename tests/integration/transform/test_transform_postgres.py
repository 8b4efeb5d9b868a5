"""The PostgreSQL warehouse (a real server on loopback) holds the same rows as the Parquet."""

from datetime import timedelta

import pytest

from ops.pg import create_database
from ops.sample_data import SampleDatabase
from services.ingest.source import connect
from services.transform import handler as transform_handler
from services.transform.postgres import PostgresWarehouse
from services.transform.warehouse import WAREHOUSE_TABLES
from shared.reader import read_latest
from shared.tables import TABLES
from tests.integration.transform_pipeline import TransformChain

pytestmark = pytest.mark.xdist_group("postgres")


@pytest.fixture
def warehouse(pg_server):
    admin = connect(pg_server.credentials())
    create_database(admin, "warehouse_test")
    admin.close()
    sink = PostgresWarehouse(connect(pg_server.credentials("warehouse_test")))
    yield sink
    sink.close()
    admin = connect(pg_server.credentials())
    admin.run("DROP DATABASE warehouse_test")
    admin.close()


def by_key(name, rows):
    key = WAREHOUSE_TABLES[name].key
    return sorted(rows, key=lambda r: r[key])


def test_postgres_load_holds_the_parquet_rows(aws, warehouse):
    chain = TransformChain(sink=warehouse)
    try:
        for table, rows in SampleDatabase(seed=31, orders=25).snapshot().items():
            chain.merge(table, rows, baseline=True)
        chain.deliver()
        (order,) = read_latest(chain.store, TABLES["sales_order"]).rows[:1]
        changed = order.model_copy(
            update={
                "agreed_delivery_location_id": 4,
                "last_updated": order.last_updated + timedelta(hours=2),
            }
        )
        chain.merge("sales_order", [changed.model_dump()])
        chain.deliver()
        for body in chain.delivered:  # replays upsert the same rows again
            assert chain.invoke([body]) == []

        for name in WAREHOUSE_TABLES:
            parquet_rows = by_key(name, chain.table(name))
            assert parquet_rows, name
            assert warehouse.rows(name) == parquet_rows, name
        facts = [r for r in warehouse.rows("fact_sales_order") if r["sales_order_id"] == 1]
        assert len(facts) == 2

        chain.service.rebuild()
        for name in WAREHOUSE_TABLES:
            assert warehouse.rows(name) == by_key(name, chain.table(name)), name
    finally:
        transform_handler.use_runtime(None)
