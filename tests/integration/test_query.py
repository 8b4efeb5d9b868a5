"""`ingestctl query` over a warehouse the real merge and transform wrote (moto in-process):
every view returns what the bucket holds, read here independently of the query's code."""

import csv
import io
import json
from datetime import datetime
from decimal import Decimal

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from ops.cli import app
from ops.folder_store import FolderStore
from ops.query import VIEWS, QueryError, parquet_keys, run_query
from ops.snapshot import copy_objects
from services.transform.changes import CHANGE_TABLES
from services.transform.warehouse import WAREHOUSE_TABLES
from shared.layout import WAREHOUSE_PARTITION_COLUMN
from shared.reader import read_latest, read_tombstones
from shared.tables import TABLES
from tests.integration.transform.test_transform_deletes import baseline, first, merge_delete
from tests.integration.transform_pipeline import BUCKET, REGION, TransformChain

DELETED_AT = datetime(2026, 12, 1, 9, 30, 0, 123456)


@pytest.fixture
def chain(aws):
    """A baseline of every table, an order changed (two versions), a staff member deleted."""
    from services.transform import handler as transform_handler

    chain = TransformChain()
    baseline(chain, 41)
    order = first(chain, "sales_order")
    changed = {"units_sold": order.units_sold + 1, "last_updated": DELETED_AT}
    chain.merge("sales_order", [order.model_dump() | changed])
    merge_delete(chain, "staff", first(chain, "staff").staff_id, DELETED_AT)
    chain.deliver()
    yield chain
    transform_handler.use_runtime(None)


def parquet_rows(store, table):
    """A table's rows straight from its Parquet objects, with a fact's partition from the key
    (as Athena's partition projection gives it)."""
    rows = []
    for key in parquet_keys(store, table):
        found = pq.read_table(io.BytesIO(store.get(key).data)).to_pylist()
        if table.partition_column:
            part = key.split(f"{WAREHOUSE_PARTITION_COLUMN}=")[1].split("/")[0]
            found = [r | {table.partition_column: part} for r in found]
        rows += [tuple(r.values()) for r in found]
    return rows


def test_every_warehouse_and_change_table_returns_its_parquet_rows(chain):
    tables = [*WAREHOUSE_TABLES.values(), *CHANGE_TABLES.values()]
    assert {t.name for t in tables} <= VIEWS.keys()
    for table in tables:
        result = run_query(chain.store, f"SELECT * FROM {table.name}")
        expected = parquet_rows(chain.store, table)
        assert sorted(result.rows, key=repr) == sorted(expected, key=repr), table.name
        partition = [table.partition_column] if table.partition_column else []
        assert result.columns == [*table.column_names, *partition]
    # the test has something to compare: every fact and dimension has rows
    assert all(parquet_rows(chain.store, t) for t in WAREHOUSE_TABLES.values())


def test_the_changed_order_has_two_fact_rows(chain):
    order = first(chain, "sales_order").sales_order_id
    result = run_query(
        chain.store,
        "SELECT units_sold, created_month FROM fact_sales_order "
        f"WHERE sales_order_id = {order} ORDER BY last_updated_date, last_updated_time",
    )
    assert result.columns == ["units_sold", "created_month"]
    assert len(result.rows) == 2
    assert result.rows[1][0] == result.rows[0][0] + 1
    assert result.types == ["INTEGER", "VARCHAR"]


def test_the_changed_orders_versions_in_its_change_table(chain):
    order = first(chain, "sales_order")
    result = run_query(
        chain.store,
        "SELECT version, units_sold, valid_from, valid_to FROM changes_sales_order "
        f"WHERE sales_order_id = {order.sales_order_id} ORDER BY version",
    )
    (v1, v2) = result.rows
    assert (v1[0], v2[0]) == (1, 2)
    assert v2[1] == v1[1] + 1
    assert v1[3] == v2[2]  # the first ended when the second began
    assert v2[3] is None  # current


def test_latest_views_hold_the_live_rows_and_no_tombstone(chain):
    for name, spec in TABLES.items():
        result = run_query(chain.store, f"SELECT * FROM latest_{name}")
        latest = read_latest(chain.store, spec).rows
        assert result.columns == list(spec.columns)
        assert len(result.rows) == len(latest), name
        keys = [row[0] for row in result.rows]
        assert sorted(keys) == sorted(getattr(r, spec.primary_key) for r in latest)
    (gone,) = read_tombstones(chain.store, TABLES["staff"])
    assert run_query(
        chain.store, f"SELECT count(*) FROM latest_staff WHERE staff_id = {gone.key}"
    ).rows == [(0,)]


def test_latest_values_are_typed_as_the_change_table_types_them(chain):
    order = first(chain, "sales_order")
    result = run_query(
        chain.store,
        "SELECT last_updated, unit_price, agreed_delivery_date FROM latest_sales_order "
        f"WHERE sales_order_id = {order.sales_order_id}",
    )
    assert result.types == ["TIMESTAMP", "DECIMAL(12,2)", "DATE"]
    ((stamp, price, day),) = result.rows
    assert (stamp, price, day.isoformat()) == (
        order.last_updated,
        order.unit_price,
        order.agreed_delivery_date,
    )


def test_only_the_tables_the_sql_names_are_read(chain):
    reads: list[str] = []

    def count_read(params, **_):
        reads.append(params["Key"])

    chain.store.client.meta.events.register("provide-client-params.s3.GetObject", count_read)
    run_query(chain.store, "WITH d AS (SELECT * FROM dim_currency) SELECT count(*) FROM d")
    assert reads
    assert all(k.startswith("warehouse/dim_currency/") for k in reads)


def test_bad_sql_and_unknown_tables_are_query_errors(chain):
    with pytest.raises(QueryError, match="syntax error"):
        run_query(chain.store, "SELEC 1")
    with pytest.raises(QueryError, match="fact_nothing"):
        run_query(chain.store, "SELECT * FROM fact_nothing")


def test_a_table_with_no_files_yet_has_its_columns_and_no_rows(aws):
    chain = TransformChain()
    result = run_query(chain.store, "SELECT * FROM fact_payment")
    assert result.rows == []
    assert result.columns == [*WAREHOUSE_TABLES["fact_payment"].column_names, "created_month"]
    assert run_query(chain.store, "SELECT * FROM latest_staff").rows == []


def test_a_snapshot_folder_answers_as_the_bucket_does(chain, tmp_path):
    copied = copy_objects(chain.store, tmp_path / "bucket")
    assert copied == len(list(chain.store.keys("latest/"))) + len(
        list(chain.store.keys("warehouse/"))
    ) + len(list(chain.store.keys("_state/schema/")))
    sql = (
        "SELECT s.sales_order_id, count(*) AS versions FROM fact_sales_order s "
        "JOIN latest_sales_order l USING (sales_order_id) GROUP BY 1 ORDER BY 1"
    )
    assert run_query(FolderStore(tmp_path / "bucket", bucket="bucket"), sql) == run_query(
        chain.store, sql
    )


# -- the command -----------------------------------------------------------------------------
def ingestctl(*args):
    target = ["--bucket", BUCKET, "--region", REGION]
    return CliRunner().invoke(app, [*target, "query", *args])


def test_the_command_prints_a_table_json_and_csv(chain):
    sql = "SELECT currency_code, currency_name FROM dim_currency ORDER BY currency_id"
    expected = run_query(chain.store, sql)

    shown = ingestctl(sql)
    assert shown.exit_code == 0, shown.output
    assert "currency_code" in shown.output
    assert all(code in shown.output for code, _ in expected.rows)

    as_json = ingestctl(sql, "--json")
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output) == [
        {"currency_code": code, "currency_name": name} for code, name in expected.rows
    ]

    as_csv = ingestctl(sql, "--csv")
    assert as_csv.exit_code == 0, as_csv.output
    assert list(csv.reader(io.StringIO(as_csv.output))) == [
        ["currency_code", "currency_name"],
        *([code, name] for code, name in expected.rows),
    ]


def test_json_keeps_money_exact_and_writes_dates_and_nulls(chain):
    sql = (
        "SELECT unit_price, agreed_delivery_date, NULL AS nothing FROM fact_sales_order "
        "ORDER BY sales_record_id LIMIT 1"
    )
    ((price, day, _),) = run_query(chain.store, sql).rows
    result = ingestctl(sql, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output, parse_float=Decimal) == [
        {"unit_price": price, "agreed_delivery_date": day.isoformat(), "nothing": None}
    ]


def test_bad_sql_exits_2_with_duckdbs_message_and_no_traceback(chain):
    result = ingestctl("SELECT * FROM fact_nothing")
    assert result.exit_code == 2
    assert "fact_nothing" in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_json_and_csv_together_are_refused(chain):
    result = ingestctl("SELECT 1", "--json", "--csv")
    assert result.exit_code == 2


def test_the_command_reads_a_snapshot_folder(chain, tmp_path):
    copy_objects(chain.store, tmp_path / "bucket")
    sql = "SELECT count(*) AS n FROM dim_staff WHERE deleted_date IS NOT NULL"
    result = CliRunner().invoke(
        app, ["query", "--snapshot", str(tmp_path / "bucket"), sql, "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [{"n": 1}]
