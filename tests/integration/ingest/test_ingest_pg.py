"""The ingest against a real PostgreSQL server and a moto bucket."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from services.ingest.ingest import IngestReport, TableState, run_ingest, watermark_key
from services.ingest.pause import EventBridgeSchedule
from shared.changes import COMMIT_TS_COLUMN, OP_COLUMN
from shared.events import EventDetail, RowsMissingAtSource
from shared.layout import PAUSE_RECORD_KEY, baseline_key, latest_key, staging_key
from shared.observation import OBSERVED_METADATA, Observation
from shared.rows import decode_rows, dump_rows, load_rows, validate_rows
from shared.schemas import Payment
from shared.storage import BucketStore, WriteResult
from shared.tables import TABLES
from tests.integration.ingest.conftest import OVERLAP, SourceDb

pytestmark = pytest.mark.xdist_group("postgres")


class ListPublisher:
    def __init__(self) -> None:
        self.events: list[RowsMissingAtSource] = []

    def publish(self, details: Sequence[EventDetail]) -> None:
        self.events += [d for d in details if isinstance(d, RowsMissingAtSource)]


def ingest(db: SourceDb, store: BucketStore, publisher=None, **kwargs) -> IngestReport:
    source = db.source()
    try:
        return run_ingest(source, store, publisher or ListPublisher(), overlap=OVERLAP, **kwargs)
    finally:
        source.close()


def staged(store: BucketStore, table: str) -> list[dict[str, Any]]:
    return decode_rows(store.get(staging_key(table)).data, table)


def state(store: BucketStore, table: str) -> TableState:
    return TableState.model_validate_json(store.get(watermark_key(table)).data)


def canonical(table: str, rows: list[dict[str, Any]]) -> bytes:
    report = validate_rows(TABLES[table], rows, table)
    assert report.ok, report.problems
    return dump_rows(TABLES[table], report.rows)


def promote_baselines(store: BucketStore) -> None:
    """What the merge does with a first baseline: it becomes latest."""
    for table in TABLES:
        store.put(latest_key(table), store.get(baseline_key(table)).data)


def test_first_run_writes_every_baseline_then_an_unchanged_source_stages_nothing(
    full_source_db, store
):
    report = ingest(full_source_db, store)

    assert report.ok, report.failures
    assert sorted(full_source_db.reads) == sorted(TABLES)  # never _prisma_migrations
    for table in TABLES:
        expected = canonical(table, full_source_db.rows(table))
        assert store.get(baseline_key(table)).data == expected
        assert not store.exists(staging_key(table))
        assert state(store, table).watermark == full_source_db.max_last_updated(table)
    assert not any(key.startswith("baseline/_prisma") for key in store.keys("baseline/"))

    second = ingest(full_source_db, store)

    assert second.ok
    for table in TABLES:
        assert store.get(staging_key(table)).data == b"[]\n", table
        assert state(store, table).watermark == full_source_db.max_last_updated(table)


def _new_sales_order(db: SourceDb, key: int, stamp) -> dict[str, Any]:
    row = dict(db.rows("sales_order")[0])
    row.update(sales_order_id=key, created_at=stamp, last_updated=stamp, unit_price=Decimal("3.10"))
    return row


def observed(store: BucketStore, key: str) -> Observation:
    return Observation.parse(store.metadata(key)[OBSERVED_METADATA])


def test_every_file_says_when_the_database_read_its_rows(source_db, store):
    # The merge orders versions by this (README "The merge"): the database's clock at the read,
    # not the bucket's time of the write.
    before = source_db.clock()
    ingest(source_db, store)
    between = source_db.clock()
    ingest(source_db, store)
    after = source_db.clock()

    order = list(TABLES)  # the ingest reads the tables in registry order
    baselines = [observed(store, baseline_key(table)) for table in order]
    stagings = [observed(store, staging_key(table)) for table in order]
    assert all(Observation(before) <= o <= Observation(between) for o in baselines)
    assert all(Observation(between) <= o <= Observation(after) for o in stagings)
    assert baselines == sorted(baselines)
    assert stagings == sorted(stagings)
    assert len(set(baselines)) == len(order)  # one read (one snapshot) per table


def test_a_table_the_database_cannot_read_fails_alone(source_db, store):
    # Each table is read in a transaction of its own: a failed one is rolled back, not left
    # aborted under the next table's read.
    source_db.conn.run("ALTER TABLE staff RENAME TO staff_elsewhere")

    report = ingest(source_db, store)

    assert [t.table for t in report.failures] == ["staff"]
    assert "staff" in (report.failures[0].error or "")
    assert all(store.exists(baseline_key(table)) for table in TABLES if table != "staff")


def test_inserts_and_updates_are_staged_once_in_effect(source_db, store):
    ingest(source_db, store)
    mark = source_db.max_last_updated("payment")
    payment = source_db.rows("payment")[0]
    new_order = _new_sales_order(source_db, 900_001, source_db.max_last_updated("sales_order"))
    new_order["last_updated"] += timedelta(minutes=1)
    source_db.insert("sales_order", new_order)
    source_db.update(
        "payment",
        payment["payment_id"],
        paid=not payment["paid"],
        last_updated=mark + timedelta(minutes=2),
    )

    report = ingest(source_db, store)

    assert report.ok
    assert [r["sales_order_id"] for r in staged(store, "sales_order")] == [900_001]
    assert staged(store, "sales_order")[0]["unit_price"] == Decimal("3.1")
    (row,) = staged(store, "payment")
    assert (row["payment_id"], row["paid"]) == (payment["payment_id"], not payment["paid"])
    assert state(store, "payment").watermark == mark + timedelta(minutes=2)
    assert staged(store, "address") == []

    # The next run re-reads the overlap window but stages nothing it has already staged.
    again = ingest(source_db, store)
    assert again.ok
    assert staged(store, "sales_order") == []
    assert staged(store, "payment") == []


def test_a_row_committed_late_with_an_older_last_updated_is_caught(source_db, store):
    ingest(source_db, store)
    watermark = source_db.max_last_updated("sales_order")
    source_db.insert("sales_order", _new_sales_order(source_db, 900_002, watermark + timedelta(1)))
    ingest(source_db, store)
    assert state(store, "sales_order").watermark == watermark + timedelta(1)

    # Committed after that run, stamped before its watermark (a long transaction): inside the
    # overlap window it is caught; far older than the window, a non-reconcile table cannot.
    inside = watermark + timedelta(1) - OVERLAP + timedelta(seconds=1)
    source_db.insert("sales_order", _new_sales_order(source_db, 900_003, inside))
    too_old = watermark + timedelta(1) - OVERLAP - timedelta(seconds=1)
    source_db.insert("sales_order", _new_sales_order(source_db, 900_004, too_old))

    report = ingest(source_db, store)

    assert report.ok
    assert [r["sales_order_id"] for r in staged(store, "sales_order")] == [900_003]
    assert state(store, "sales_order").watermark == watermark + timedelta(1)  # data, not clock


class CrashOnWatermark(BucketStore):
    """The bucket, failing the way a Lambda timeout would: after staging, before the state."""

    def put(self, key: str, data: bytes, **kwargs) -> WriteResult:
        if key == watermark_key("sales_order"):
            raise TimeoutError("killed between the staging write and the watermark save")
        return super().put(key, data, **kwargs)


def test_a_crash_before_the_watermark_save_re_reads_instead_of_skipping(source_db, store):
    ingest(source_db, store)
    before = state(store, "sales_order")
    stamp = source_db.max_last_updated("sales_order") + timedelta(hours=1)
    source_db.insert("sales_order", _new_sales_order(source_db, 900_010, stamp))

    crashed = ingest(source_db, CrashOnWatermark(store.bucket))

    assert not crashed.ok
    assert [t.table for t in crashed.failures] == ["sales_order"]
    assert "TimeoutError" in (crashed.failures[0].error or "")
    assert [r["sales_order_id"] for r in staged(store, "sales_order")] == [900_010]
    assert state(store, "sales_order") == before

    recovered = ingest(source_db, store)

    assert recovered.ok
    assert [r["sales_order_id"] for r in staged(store, "sales_order")] == [900_010]
    assert state(store, "sales_order").watermark == stamp
    assert staged(store, "payment") == []  # the others were not disturbed


def test_reconcile_stages_a_silent_edit_and_a_deleted_key_as_a_delete(source_db, store, events):
    designs = source_db.rows("design")
    edited, deleted = designs[1], designs[2]
    # Long before the watermark's overlap window, where only reconcile can see an edit.
    edited["last_updated"] = designs[0]["created_at"] - timedelta(days=30)
    source_db.update("design", edited["design_id"], last_updated=edited["last_updated"])
    ingest(source_db, store, events.publisher)
    promote_baselines(store)
    # The real drift: file_location rewritten, last_updated left alone.
    source_db.update("design", edited["design_id"], file_location="/moved/elsewhere")
    source_db.conn.run("DELETE FROM design WHERE design_id = :k", k=deleted["design_id"])
    latest_before = store.get(latest_key("design")).data

    report = ingest(source_db, store, events.publisher)

    assert report.ok
    (row, tombstone) = staged(store, "design")
    assert row["design_id"] == edited["design_id"]
    assert row["file_location"] == "/moved/elsewhere"
    assert row["last_updated"] == edited["last_updated"].isoformat(timespec="microseconds")
    # the inferred delete (the default for reconciled tables): the key, the operation, when
    assert set(tombstone) == {"design_id", OP_COLUMN, COMMIT_TS_COLUMN}
    assert (tombstone["design_id"], tombstone[OP_COLUMN]) == (deleted["design_id"], "delete")
    result = {t.table: t for t in report.tables}["design"]
    assert (result.silent_edits, result.missing_at_source) == (1, [deleted["design_id"]])
    (event,) = events.received()
    assert event["detail-type"] == "RowsMissingAtSource"
    assert event["detail"]["table"] == "design"
    assert event["detail"]["keys"] == [deleted["design_id"]]
    assert event["detail"]["missing_count"] == 1
    assert store.get(latest_key("design")).data == latest_before  # the merge takes it out
    assert staged(store, "staff") == []  # reconciled, unchanged


def test_reconcile_does_not_restage_rows_latest_already_has(source_db, store, events):
    ingest(source_db, store, events.publisher)
    promote_baselines(store)
    report = ingest(source_db, store, events.publisher)
    assert report.ok
    for table in TABLES:
        assert staged(store, table) == [], table
    assert events.received() == []


def test_a_row_the_schema_rejects_stops_its_table_and_keeps_its_watermark(source_db, store):
    ingest(source_db, store)
    before = state(store, "sales_order")
    bad = source_db.rows("sales_order")[5]
    assert before.watermark is not None
    later = before.watermark + timedelta(minutes=5)
    source_db.update(
        "sales_order", bad["sales_order_id"], agreed_delivery_date="2022-13-45", last_updated=later
    )
    payment = source_db.rows("payment")[0]
    source_db.update("payment", payment["payment_id"], last_updated=later)
    store.put(staging_key("sales_order"), b"[]\n")
    staging_version = store.get(staging_key("sales_order")).version_id

    report = ingest(source_db, store)

    assert not report.ok
    (failure,) = report.failures
    assert failure.table == "sales_order"
    error = failure.error or ""
    assert "table sales_order" in error
    assert f"key={bad['sales_order_id']}" in error
    assert "field agreed_delivery_date" in error
    assert "postgresql:sales_order[" in error
    assert "'2022-13-45'" in error
    assert state(store, "sales_order") == before
    assert store.get(staging_key("sales_order")).version_id == staging_version  # nothing written
    assert [r["payment_id"] for r in staged(store, "payment")] == [payment["payment_id"]]

    # Fixed at the source: the next run stages it; nothing was skipped.
    source_db.update("sales_order", bad["sales_order_id"], agreed_delivery_date="2022-12-31")
    fixed = ingest(source_db, store)
    assert fixed.ok
    (row,) = staged(store, "sales_order")
    assert (row["sales_order_id"], row["agreed_delivery_date"]) == (
        bad["sales_order_id"],
        "2022-12-31",
    )


def test_a_pause_record_stops_the_ingest_before_it_reads(source_db, store):
    store.put(
        PAUSE_RECORD_KEY, json.dumps({"paused": True, "reason": "DLQ ingest-staff-dlq"}).encode()
    )

    report = ingest(source_db, store)

    assert report.paused
    assert "DLQ ingest-staff-dlq" in report.paused
    assert source_db.reads == []
    assert list(store.keys("")) == [PAUSE_RECORD_KEY]

    store.put(PAUSE_RECORD_KEY, json.dumps({"paused": False}).encode())  # resumed
    assert ingest(source_db, store).ok
    assert store.exists(baseline_key("staff"))


def test_a_disabled_schedule_rule_stops_the_ingest(source_db, store):
    import boto3

    events = boto3.client("events")
    events.put_rule(Name="ingest-schedule", ScheduleExpression="rate(20 minutes)")
    events.disable_rule(Name="ingest-schedule")

    report = ingest(source_db, store, schedule=EventBridgeSchedule("ingest-schedule"))

    assert report.paused == "the ingest schedule rule is disabled"
    assert source_db.reads == []
    events.enable_rule(Name="ingest-schedule")
    assert ingest(source_db, store, schedule=EventBridgeSchedule("ingest-schedule")).ok
    assert source_db.reads  # read once enabled


def test_money_and_timestamps_reach_the_baseline_exactly(source_db, store):
    ingest(source_db, store)
    spec = TABLES["payment"]
    report = load_rows(spec, store.get(baseline_key("payment")).data, "baseline")
    assert report.ok
    source = {r["payment_id"]: r for r in source_db.rows("payment")}
    for row in report.rows:
        assert isinstance(row, Payment)
        assert row.payment_amount == source[row.payment_id]["payment_amount"]
        assert row.last_updated == source[row.payment_id]["last_updated"]


def test_an_unreadable_latest_skips_reconcile_but_not_the_changed_rows(source_db, store):
    ingest(source_db, store)
    store.put(latest_key("design"), b"{not json")
    design = source_db.rows("design")[0]
    later = source_db.max_last_updated("design") + timedelta(minutes=1)
    source_db.update("design", design["design_id"], design_name="Granite", last_updated=later)

    report = ingest(source_db, store)

    assert report.ok
    assert [(r["design_id"], r["design_name"]) for r in staged(store, "design")] == [
        (design["design_id"], "Granite")
    ]
    result = {t.table: t for t in report.tables}["design"]
    assert (result.silent_edits, result.missing_at_source) == (0, [])


def test_an_unreachable_source_fails_every_table_once_and_writes_nothing(store):
    from ops.pg import free_port
    from services.ingest.source import PostgresSource, SourceCredentials

    dead = SourceCredentials(
        host="127.0.0.1", port=free_port(), database="totesys", user="u", password="p"
    )
    attempts = []

    def credentials() -> SourceCredentials:
        attempts.append(1)
        return dead

    report = run_ingest(PostgresSource(credentials), store, ListPublisher(), overlap=OVERLAP)

    assert [t.table for t in report.failures] == list(TABLES)
    assert "cannot connect to 127.0.0.1" in (report.failures[-1].error or "")
    assert len(attempts) == 1  # not once per table
    assert list(store.keys("")) == []
