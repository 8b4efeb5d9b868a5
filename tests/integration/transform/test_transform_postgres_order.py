"""The PostgreSQL sink under concurrency (issue 18), on a real server on loopback: two
transforms at once leave PostgreSQL equal to the Parquet whatever the order their writes land
in, and a warm function whose connection was dropped reconnects."""

from functools import partial

import boto3
import pytest

from ops.pg import create_database
from ops.sample_data import SampleDatabase
from services.ingest.source import connect
from services.transform import handler as transform_handler
from services.transform.events import parse_message
from services.transform.postgres import PostgresWarehouse
from services.transform.service import SourceChange, TransformService
from services.transform.warehouse import WAREHOUSE_TABLES
from shared.storage import BucketStore
from tests.integration.transform.test_transform_versions import load_baselines
from tests.integration.transform_interleavings import (
    TOUCHED,
    assert_manifests_count_their_files,
    logged,
    merge_changes,
)
from tests.integration.transform_pipeline import BUCKET, REGION, TransformChain

pytestmark = pytest.mark.xdist_group("postgres")
DATABASE = "warehouse_order_test"


@pytest.fixture
def warehouse_url(pg_server):
    admin = connect(pg_server.credentials())
    create_database(admin, DATABASE)
    admin.close()
    yield pg_server.url(DATABASE)
    admin = connect(pg_server.credentials())
    admin.run(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d", d=DATABASE
    )
    admin.run(f"DROP DATABASE {DATABASE}")
    admin.close()


@pytest.fixture
def pg_chain(aws, warehouse_url):
    sink = PostgresWarehouse.from_url(warehouse_url)
    chain = TransformChain(sink=sink)
    yield chain
    transform_handler.use_runtime(None)
    sink.close()


def by_key(name, rows):
    return sorted(rows, key=lambda r: r[WAREHOUSE_TABLES[name].key])


def assert_postgres_is_the_parquet(chain, sink, tables=TOUCHED):
    for name in [t for t in tables if t in WAREHOUSE_TABLES]:  # no change tables there
        assert sink.rows(name) == by_key(name, chain.table(name)), name


def transform(url):
    """A second transform function: its own S3 client and its own PostgreSQL connection."""
    store = BucketStore(BUCKET, boto3.client("s3", region_name=REGION))
    return TransformService(store, sink=PostgresWarehouse.from_url(url))


def queued_changes(chain):
    details = [parse_message(m["Body"]) for m in chain.receive()]
    return [SourceChange.from_event(d) for d in details if d is not None]


def run_other(chain, other, step, done):
    """At a pause of the first transform: newer changes merged and the other transform
    applying them, start to end."""
    merge_changes(chain, step)
    for change in queued_changes(chain):
        other.apply(change)
    done.append(step)


def pause_points(calls):
    """Every gap between the first transform's writes: before each S3 write (between the
    read it is based on and it), after it (before the sink), after the sink (before the
    next call); and before its first call."""
    points = [("before", 0)]
    for i, call in enumerate(calls):
        if call.startswith("PutObject"):
            points += [("before", i), ("after", i), ("before", i + 1)]
    return list(dict.fromkeys(p for p in points if p[1] < len(calls)))


def test_two_transforms_at_once_leave_postgres_equal_to_the_parquet(pg_chain, warehouse_url):
    load_baselines(pg_chain, SampleDatabase(seed=51, orders=6))
    first, other = transform(warehouse_url), transform(warehouse_url)
    merge_changes(pg_chain, 0)
    with logged(first.store.client) as log:
        for change in queued_changes(pg_chain):
            first.apply(change)
    points = pause_points(log.calls)
    assert len(points) > 10
    for number, (when, index) in enumerate(points):
        step = 2 * number + 1
        merge_changes(pg_chain, step)
        done: list[int] = []
        with logged(first.store.client) as log:
            action = partial(run_other, pg_chain, other, step + 1, done)
            (log.pause_at if when == "before" else log.pause_after)(index, action)
            for change in queued_changes(pg_chain):
                first.apply(change)
        assert done, f"{when} {index}: {log.calls[-3:]}"
        assert_postgres_is_the_parquet(pg_chain, first.sink)
        assert_manifests_count_their_files(pg_chain)
    staff = pg_chain.service.sink.rows("dim_staff")
    assert staff[0]["first_name"] == f"Name{step + 1}"
    first.sink.close()
    other.sink.close()


def test_a_dropped_connection_between_two_events_is_reopened(pg_chain, pg_server):
    load_baselines(pg_chain, SampleDatabase(seed=52, orders=6))
    sink = pg_chain.service.sink
    (pid,) = sink.conn.run("SELECT pg_backend_pid()")[0]
    admin = connect(pg_server.credentials())
    assert admin.run("SELECT pg_terminate_backend(:p)", p=pid) == [[True]]
    admin.close()

    merge_changes(pg_chain, 1)
    pg_chain.deliver()  # asserts no message failed

    assert sink.conn.run("SELECT pg_backend_pid()")[0][0] != pid
    assert_postgres_is_the_parquet(pg_chain, sink)
    assert sink.rows("dim_staff")[0]["first_name"] == "Name1"
