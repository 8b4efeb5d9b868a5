"""A real PostgreSQL server on loopback (one per xdist worker that runs these tests, shared
through the `postgres` xdist group), a fresh database per test, and moto for S3/EventBridge."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import boto3
import pg8000.native
import pytest

from ops.pg import (
    WAL2JSON_PACKAGE,
    LocalPostgres,
    create_database,
    insert_rows,
    load_snapshot,
)
from ops.sample_data import SampleDatabase
from services.ingest.source import (
    PAGE_ROWS,
    PostgresSource,
    SourceCredentials,
    SourcePages,
    SourceRead,
    connect,
)
from services.merge import handler as merge_handler
from services.merge.settings import MergeSettings
from shared.events import EventPublisher
from shared.naming import EVENT_SOURCE
from shared.storage import BucketStore
from shared.tables import TABLES, TableSpec
from tests.conftest import started_postgres
from tests.realdata import PARQUET_2024_11_15, read_parquet

BUCKET = "test-ingest-bucket"
BUS = "ingest-events"
SMALL_TABLE_ROWS = 200  # big tables are cut to their first rows for the fast template
TEMPLATE_SMALL = "totesys_small"
TEMPLATE_FULL = "totesys_full"


def source_rows(limit: int | None) -> dict[str, list[dict[str, Any]]]:
    """Real rows (2024-11-15 dump) where the snapshots are present, else sample data."""
    if PARQUET_2024_11_15.exists():
        rows = {name: read_parquet(name) for name in TABLES}
    else:
        rows = SampleDatabase(seed=3, orders=120).snapshot()
    if limit is None:
        return rows
    return {name: table[:limit] if len(table) > 600 else table for name, table in rows.items()}


def _template(server: LocalPostgres, name: str, limit: int | None) -> str:
    admin = connect(server.credentials())
    try:
        create_database(admin, name)
    finally:
        admin.close()
    conn = connect(server.credentials(name))
    try:
        load_snapshot(conn, source_rows(limit))
    finally:
        conn.close()
    return name


@pytest.fixture(scope="session")
def small_template(pg_server: LocalPostgres) -> str:
    return _template(pg_server, TEMPLATE_SMALL, SMALL_TABLE_ROWS)


@pytest.fixture(scope="session")
def full_template(pg_server: LocalPostgres) -> str:
    return _template(pg_server, TEMPLATE_FULL, None)


@dataclass
class SourceDb:
    """One test's own database, copied from a template, and a connection to change it."""

    server: LocalPostgres
    name: str
    conn: pg8000.native.Connection
    reads: list[str] = field(default_factory=list)

    @property
    def credentials(self) -> SourceCredentials:
        return self.server.credentials(self.name)

    def source(self) -> RecordingSource:
        return RecordingSource(PostgresSource(lambda: self.credentials), self.reads)

    def rows(self, table: str) -> list[dict[str, Any]]:
        with PostgresSource(lambda: self.credentials) as source:
            return source.read(TABLES[table], None).rows

    def clock(self) -> datetime:
        """The database's clock now (what the ingest stamps its files with)."""
        value: datetime = self.conn.run("SELECT clock_timestamp()")[0][0]
        return value

    def max_last_updated(self, table: str) -> datetime:
        value: datetime = self.conn.run(
            f"SELECT max(last_updated) FROM {pg8000.native.identifier(table)}"
        )[0][0]
        return value

    def insert(self, table: str, row: dict[str, Any]) -> None:
        insert_rows(self.conn, TABLES[table], [row])

    def update(self, table: str, key: int, **values: Any) -> None:
        spec = TABLES[table]
        ident = pg8000.native.identifier
        sets = ", ".join(f"{ident(c)} = :{c}" for c in values)
        self.conn.run(
            f"UPDATE {ident(table)} SET {sets} WHERE {ident(spec.primary_key)} = :key",
            key=key,
            **values,
        )
        assert self.conn.row_count == 1


class RecordingSource:
    """The real PostgreSQL source, noting which tables it was asked to read."""

    def __init__(self, inner: PostgresSource, reads: list[str]) -> None:
        self.inner = inner
        self.reads = reads

    def read(self, spec: TableSpec, since: datetime | None) -> SourceRead:
        self.reads.append(spec.name)
        return self.inner.read(spec, since)

    def pages(
        self, spec: TableSpec, since: datetime | None, *, page_rows: int = PAGE_ROWS
    ) -> AbstractContextManager[SourcePages]:
        self.reads.append(spec.name)
        return self.inner.pages(spec, since, page_rows=page_rows)

    def close(self) -> None:
        self.inner.close()


def _database(server: LocalPostgres, template: str) -> Iterator[SourceDb]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = connect(server.credentials())
    create_database(admin, name, template=template)
    conn = connect(server.credentials(name))
    try:
        yield SourceDb(server, name, conn)
    finally:
        conn.close()
        admin.run(f"DROP DATABASE {pg8000.native.identifier(name)} WITH (FORCE)")
        admin.close()


@pytest.fixture
def source_db(pg_server: LocalPostgres, small_template: str) -> Iterator[SourceDb]:
    yield from _database(pg_server, small_template)


@pytest.fixture
def full_source_db(pg_server: LocalPostgres, full_template: str) -> Iterator[SourceDb]:
    yield from _database(pg_server, full_template)


@pytest.fixture
def store(aws: None) -> BucketStore:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    return BucketStore(BUCKET)


@dataclass
class EventCapture:
    """A bus whose every event lands in an SQS queue, as a downstream consumer would see it."""

    publisher: EventPublisher
    queue_url: str

    def received(self) -> list[dict[str, Any]]:
        sqs = boto3.client("sqs")
        found: list[dict[str, Any]] = []
        while True:
            batch = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10)
            messages = batch.get("Messages", [])
            if not messages:
                return found
            for message in messages:
                found.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])


@pytest.fixture
def events(aws: None) -> EventCapture:
    bridge = boto3.client("events")
    sqs = boto3.client("sqs")
    bridge.create_event_bus(Name=BUS)
    queue_url = sqs.create_queue(QueueName="ingest-consumer")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    bridge.put_rule(
        Name="all-ingest", EventBusName=BUS, EventPattern=json.dumps({"source": [EVENT_SOURCE]})
    )
    bridge.put_targets(Rule="all-ingest", EventBusName=BUS, Targets=[{"Id": "q", "Arn": arn}])
    return EventCapture(EventPublisher(BUS), queue_url)


OVERLAP = timedelta(seconds=300)


def need_wal2json(server: LocalPostgres) -> None:
    """Skip where the server has no wal2json (log-mode tests need it)."""
    if not server.has_wal2json:
        pytest.skip(
            f"the wal2json plugin is not installed for the PostgreSQL in {server.bindir} "
            f"(Debian: apt-get install {WAL2JSON_PACKAGE}; .ci/run does it)"
        )


def drop_slots(conn: pg8000.native.Connection) -> None:
    conn.run(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
        "WHERE database = current_database()"
    )


CHAIN_TABLE = "payment_type"
CHAIN_BUS = "e2e-bus"


@pytest.fixture
def chain(source_db: SourceDb, store: BucketStore) -> Iterator[tuple[SourceDb, BucketStore, Any]]:
    """The source, the bucket, and the real merge service of `CHAIN_TABLE` (events to
    `CHAIN_BUS`); the test's replication slots are dropped afterwards."""
    need_wal2json(source_db.server)
    boto3.client("events").create_event_bus(Name=CHAIN_BUS)
    dlq = boto3.client("sqs").create_queue(QueueName="e2e-dlq")["QueueUrl"]
    settings = MergeSettings(
        bucket_name=BUCKET, table_name=CHAIN_TABLE, event_bus_name=CHAIN_BUS, dlq_url=dlq
    )
    yield source_db, store, merge_handler.build_service(settings)
    drop_slots(source_db.conn)


@pytest.fixture(scope="module")
def own_server() -> Iterator[LocalPostgres]:
    """A server of the module's own, which its tests may stop and start (the session's
    server is shared by every test of a worker)."""
    yield from started_postgres("ingest-pg-own-", need_wal2json)


@contextlib.contextmanager
def own_database(server: LocalPostgres) -> Iterator[SourceDb]:
    """An empty database of its own on `server`, with a connection the test may lose to a
    restart; its slots and the database are dropped afterwards."""
    name = f"r_{uuid.uuid4().hex[:12]}"
    admin = connect(server.credentials())
    create_database(admin, name)
    admin.close()
    db = SourceDb(server, name, connect(server.credentials(name)))
    try:
        yield db
    finally:
        with contextlib.suppress(OSError, pg8000.native.InterfaceError):
            db.conn.close()  # a restart may have broken it already
        cleanup = connect(server.credentials(name))
        drop_slots(cleanup)
        cleanup.close()
        admin = connect(server.credentials())
        admin.run(f"DROP DATABASE {pg8000.native.identifier(name)} WITH (FORCE)")
        admin.close()
