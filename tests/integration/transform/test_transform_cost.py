"""What one event costs follows the event (issue 18): a one-key change to a partitioned table
reads the one partition of latest holding the key, not all of latest. Each output reads it
after its own file's ETag (the facts or the dimension, then the change table: twice)."""

from ops.sample_data import SampleDatabase
from services.transform.warehouse import WAREHOUSE_TABLES
from shared.reader import read_latest
from shared.tables import TABLES
from tests.integration.merge_pipeline import table_partitions
from tests.integration.transform.test_transform_versions import load_baselines
from tests.integration.transform_interleavings import (
    assert_rebuilds_to_the_same_bytes,
    changed,
    logged,
)


def partition_reads(calls, table):
    prefix = f"GetObject latest/{table}/"
    return [c for c in calls if c.startswith(prefix) and not c.endswith("_manifest.json")]


def assert_reads_one_partition(calls, table):
    """Only the partition holding the key, once per output that reads it (2)."""
    reads = partition_reads(calls, table)
    assert len(set(reads)) == 1, calls
    assert len(reads) == 2, calls


def test_a_one_key_event_reads_one_partition_of_latest(chain):
    with table_partitions("sales_order", 2):
        load_baselines(chain, SampleDatabase(seed=61, orders=12))
        orders = read_latest(chain.store, TABLES["sales_order"]).rows
        assert len(orders) >= 8  # four partitions or more
        chain.merge("sales_order", [changed("sales_order", 5, 30, units_sold=7)])
        with logged(chain.store.client) as log:
            chain.deliver()
        assert_reads_one_partition(log.calls, "sales_order")

        facts = chain.table("fact_sales_order")
        assert len(facts) == len(orders) + 1
        key = WAREHOUSE_TABLES["fact_sales_order"].natural_key
        order_id = orders[5].model_dump()["sales_order_id"]
        assert [r["units_sold"] for r in facts if r[key] == order_id][-1] == 7


def test_a_one_key_transaction_event_updates_dim_transaction_by_key(chain):
    with table_partitions("transaction", 2):
        load_baselines(chain, SampleDatabase(seed=62, orders=12))
        transactions = read_latest(chain.store, TABLES["transaction"]).rows
        index = next(i for i, t in enumerate(transactions) if t.model_dump()["sales_order_id"])
        transaction_id = transactions[index].model_dump()["transaction_id"]
        chain.merge("transaction", [changed("transaction", index, 30, sales_order_id=999)])
        with logged(chain.store.client) as log:
            chain.deliver()
        assert_reads_one_partition(log.calls, "transaction")

        dim = {r["transaction_id"]: r for r in chain.table("dim_transaction")}
        assert len(dim) == len(transactions)
        assert dim[transaction_id]["sales_order_id"] == 999
        assert_rebuilds_to_the_same_bytes(chain, ("dim_transaction",))
