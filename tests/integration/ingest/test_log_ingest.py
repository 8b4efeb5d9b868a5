"""Log-mode ingest runs (services/ingest/log_ingest.py) against a real PostgreSQL with
wal2json and moto's S3: the slot before the baseline, every change staged in commit order,
the slot advanced only once S3 holds the file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from services.ingest.ingest import IngestReport, run_ingest
from services.ingest.log_ingest import SLOT_HEALTH_KEY, SlotCapture
from services.ingest.logical import LogicalReader
from shared.changes import LSN_COLUMN, OP_COLUMN, lsn_value
from shared.events import EventPublisher
from shared.layout import baseline_key, staging_key
from shared.storage import BucketStore
from shared.tables import TABLES
from tests.integration.ingest.conftest import SourceDb, drop_slots, need_wal2json
from tests.integration.ingest.test_logical import new_payment_type

pytestmark = pytest.mark.xdist_group("postgres")

SLOT = "ingest_log_test"
TABLE = "payment_type"  # small, every column plain
PK = TABLES[TABLE].primary_key


@pytest.fixture
def log_db(source_db: SourceDb) -> Iterator[SourceDb]:
    need_wal2json(source_db.server)
    yield source_db
    drop_slots(source_db.conn)


def run(db: SourceDb, store: BucketStore, *, max_changes: int = 1000) -> IngestReport:
    spec = TABLES[TABLE]
    source = db.source()
    with LogicalReader(lambda: db.credentials, SLOT, [spec]) as reader:
        log = SlotCapture(reader, store, [TABLE], max_changes=max_changes)
        try:
            return run_ingest(
                source,
                store,
                EventPublisher("unused-bus"),
                overlap=timedelta(minutes=5),
                tables=[spec],
                log=log,
            )
        finally:
            source.close()


def staged_versions(store: BucketStore) -> list[list[dict[str, Any]]]:
    """Every version of the staging file, oldest first, as rows."""
    versions = reversed(store.versions(staging_key(TABLE)))  # S3 lists the newest first
    return [json.loads(store.get(staging_key(TABLE), v.version_id).data) for v in versions]


def ops(rows: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(row[OP_COLUMN], row[PK]) for row in rows]


def test_the_first_run_makes_the_slot_then_the_baseline_then_reads_the_log(log_db, store):
    first = run(log_db, store)
    (table,) = first.tables
    assert table.action == "baseline"
    assert store.exists(baseline_key(TABLE))
    assert first.slot is not None
    assert not store.exists(staging_key(TABLE))  # nothing changed since the slot was made
    health = json.loads(store.get(SLOT_HEALTH_KEY).data)
    assert health["wal_status"] in {"reserved", "extended"}


def test_every_change_is_staged_in_commit_order_deletes_as_tombstones(log_db, store):
    run(log_db, store)
    new_payment_type(log_db, 900, "ONE")
    log_db.update(TABLE, 900, payment_type_name="TWO")
    log_db.update(TABLE, 900, payment_type_name="THREE")
    log_db.conn.run(f"DELETE FROM {TABLE} WHERE {PK} = 900")
    new_payment_type(log_db, 900, "AGAIN")
    second = run(log_db, store)
    (rows,) = staged_versions(store)
    assert ops(rows) == [
        ("insert", 900),
        ("update", 900),
        ("update", 900),
        ("delete", 900),
        ("insert", 900),
    ]
    names = [row.get("payment_type_name") for row in rows]
    assert names[:3] == ["ONE", "TWO", "THREE"]
    assert names[4] == "AGAIN"
    positions = [lsn_value(row[LSN_COLUMN]) for row in rows]
    assert positions == sorted(positions)
    assert second.tables[0].rows_written == 5
    assert run(log_db, store).tables[0].rows_written == 0  # advanced: nothing again


def test_a_staging_write_that_fails_leaves_the_slot_and_the_rerun_stages_the_same(
    log_db, store, monkeypatch
):
    run(log_db, store)
    new_payment_type(log_db, 901, "X")
    log_db.update(TABLE, 901, payment_type_name="Y")

    def refuse(**_: Any) -> None:
        raise ConnectionError("S3 went away")

    events = store.client.meta.events
    events.register_first("before-send.s3.PutObject", refuse, unique_id="refuse")
    failed = run(log_db, store)
    assert failed.tables[0].action == "failed"
    events.unregister("before-send.s3.PutObject", unique_id="refuse")
    again = run(log_db, store)
    assert again.tables[0].rows_written == 2
    (rows,) = staged_versions(store)
    assert ops(rows) == [("insert", 901), ("update", 901)]


def test_a_backlog_of_several_pages_is_staged_whole_once(log_db, store):
    run(log_db, store)
    for key in range(910, 940):
        new_payment_type(log_db, key, f"K{key}")
    run(log_db, store, max_changes=7)
    files = staged_versions(store)
    assert len(files) > 1
    keys = [key for rows in files for _, key in ops(rows)]
    assert keys == list(range(910, 940))
