"""Polling where it can go wrong, against a real PostgreSQL: rows stamped ahead of the
database's clock, a pause written during a run, a row stamped exactly at the watermark, and
tables too big to hold in memory (streamed, byte for byte as before)."""

from __future__ import annotations

import hashlib
import json
import tracemalloc
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pg8000.native
import pytest

from services.ingest.ingest import Ingest, run_ingest, watermark_key
from services.ingest.source import PostgresSource
from shared.layout import PAUSE_RECORD_KEY, baseline_key, staging_key
from shared.observation import OBSERVED_METADATA
from shared.rows import dump_rows, validate_rows
from shared.storage import MIN_PART_BYTES, BucketStore, WriteResult
from shared.tables import TABLES
from tests.integration.ingest.conftest import OVERLAP, SourceDb
from tests.integration.ingest.test_ingest_pg import (
    ListPublisher,
    _new_sales_order,
    canonical,
    ingest,
    observed,
    staged,
    state,
)

pytestmark = pytest.mark.xdist_group("postgres")

ORDER = list(TABLES)  # the ingest reads the tables in registry order


def naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def staged_keys(store: BucketStore, table: str = "sales_order") -> list[int]:
    key = TABLES[table].primary_key
    return [r[key] for r in staged(store, table)]


# -- the watermark never passes the database's clock -------------------------------------------
def test_a_row_stamped_in_the_future_does_not_hide_the_rows_after_it(source_db, store):
    ingest(source_db, store)
    ahead = naive_utc(source_db.clock()) + timedelta(days=2)
    source_db.insert("sales_order", _new_sales_order(source_db, 900_100, ahead))

    first = ingest(source_db, store)

    assert first.ok
    assert staged_keys(store) == [900_100]  # staged, though stamped ahead
    read_at = naive_utc(observed(store, staging_key("sales_order")).at)
    assert state(store, "sales_order").watermark == read_at  # capped at the read's clock
    assert read_at < ahead

    # An ordinary row written after it is stamped behind the future one: still staged.
    source_db.insert(
        "sales_order", _new_sales_order(source_db, 900_101, naive_utc(source_db.clock()))
    )
    second = ingest(source_db, store)
    assert second.ok
    assert staged_keys(store) == [900_101]  # and the future row, re-read, is not staged again

    third = ingest(source_db, store)
    assert third.ok
    assert staged_keys(store) == []
    assert 900_100 in state(store, "sales_order").recent  # re-read until the clock passes it


def test_local_summer_time_stamps_lose_nothing_at_the_autumn_clock_change(source_db, store):
    # A source writing London time: in summer (BST, UTC+1) its stamps run an hour ahead of the
    # database's UTC clock; when the clocks go back, the next stamps are an hour lower.
    ingest(source_db, store)
    bst = naive_utc(source_db.clock()) + timedelta(hours=1)
    source_db.insert("sales_order", _new_sales_order(source_db, 900_200, bst))
    ingest(source_db, store)
    assert staged_keys(store) == [900_200]

    gmt = naive_utc(source_db.clock())  # 01:10 GMT, after 01:55 BST
    assert gmt < bst - OVERLAP
    source_db.insert("sales_order", _new_sales_order(source_db, 900_201, gmt))

    report = ingest(source_db, store)

    assert report.ok
    assert staged_keys(store) == [900_201]
    assert ingest(source_db, store).ok
    assert staged_keys(store) == []


# -- a row stamped at the edge of what was read ------------------------------------------------
def test_a_row_committed_later_stamped_exactly_at_the_window_start_is_staged(source_db, store):
    ingest(source_db, store)
    watermark = state(store, "sales_order").watermark
    assert watermark is not None
    source_db.insert("sales_order", _new_sales_order(source_db, 900_300, watermark - OVERLAP))

    assert ingest(source_db, store).ok
    assert staged_keys(store) == [900_300]  # `>=`: the window's first instant is in it


def test_without_any_overlap_a_row_stamped_at_the_watermark_is_still_read(source_db, store):
    # OVERLAP_SECONDS refuses 0 (tests/unit); below the settings, the filter itself is safe.
    def run() -> None:
        source = source_db.source()
        try:
            assert run_ingest(source, store, ListPublisher(), overlap=timedelta(0)).ok
        finally:
            source.close()

    run()
    watermark = state(store, "sales_order").watermark
    assert watermark is not None
    source_db.insert("sales_order", _new_sales_order(source_db, 900_301, watermark))
    run()
    assert staged_keys(store) == [900_301]
    run()
    assert staged_keys(store) == []


# -- the pause, before every table -------------------------------------------------------------
class PausedAfter(BucketStore):
    """The bucket, where the pause Lambda writes its record once `table`'s state is saved."""

    def __init__(self, bucket: str, table: str) -> None:
        super().__init__(bucket)
        self.table = table

    def put(self, key: str, data: bytes, **kwargs: Any) -> WriteResult:
        written = super().put(key, data, **kwargs)
        if key == watermark_key(self.table):
            record = {"paused": True, "reason": "DLQ ingest-payment-dlq"}
            super().put(PAUSE_RECORD_KEY, json.dumps(record).encode())
        return written


def test_a_pause_written_during_a_run_stops_the_tables_not_yet_read(source_db, store):
    report = ingest(source_db, PausedAfter(store.bucket, ORDER[2]))

    assert report.paused is None  # something was read
    assert "DLQ ingest-payment-dlq" in (report.stopped_by_pause or "")
    assert [t.table for t in report.tables] == ORDER[:3]
    assert report.skipped == ORDER[3:]
    assert source_db.reads == ORDER[:3]
    assert not any(store.exists(baseline_key(t)) for t in ORDER[3:])
    assert f"not read: {', '.join(ORDER[3:])}" in report.summary()

    store.put(PAUSE_RECORD_KEY, json.dumps({"paused": False}).encode())  # resumed
    resumed = ingest(source_db, store)
    assert resumed.ok
    assert resumed.skipped == []
    assert all(store.exists(baseline_key(t)) for t in ORDER)


class DisabledFrom:
    """A schedule rule the operator disables while the run is under way (its `n`th check)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.checks = 0

    def disabled(self) -> bool:
        self.checks += 1
        return self.checks >= self.n


def test_a_schedule_rule_disabled_during_a_run_stops_it_too(source_db, store):
    schedule = DisabledFrom(3)  # the first check is before any table, then one before each
    report = ingest(source_db, store, schedule=schedule)

    assert report.stopped_by_pause == "the ingest schedule rule is disabled"
    assert source_db.reads == ORDER[:2]
    assert report.skipped == ORDER[2:]


# -- streaming: a page in memory, the same bytes ------------------------------------------------
def add_sales_orders(db: SourceDb, count: int, *, first_key: int, start: datetime) -> None:
    """`count` copies of the first order, keys from `first_key`, one a second from `start`."""
    ident = pg8000.native.identifier
    spec = TABLES["sales_order"]
    made = {
        "sales_order_id": f"{first_key} - 1 + g",
        "last_updated": "CAST(:start AS timestamp) + make_interval(secs => g)",
    }
    select = ", ".join(made.get(c, f"s.{ident(c)}") for c in spec.columns)
    db.conn.run(
        f"INSERT INTO sales_order ({', '.join(ident(c) for c in spec.columns)}) "
        f"SELECT {select} FROM sales_order s, generate_series(1, {int(count)}) g "
        "WHERE s.sales_order_id = (SELECT min(sales_order_id) FROM sales_order)",
        start=start,
    )


def whole(db: SourceDb, table: str) -> bytes:
    """The file as the ingest wrote it before streaming: the whole table read, then dumped."""
    with PostgresSource(lambda: db.credentials) as source:
        rows = source.read(TABLES[table], None).rows
    return canonical(table, rows)


BIG = 24_000  # about 8 MB of sales_order lines: two parts of 5 MiB


def test_a_big_table_streams_into_parts_byte_for_byte_as_before(source_db, store):
    start = source_db.max_last_updated("sales_order") + timedelta(minutes=1)
    add_sales_orders(source_db, BIG, first_key=1_000_001, start=start)
    streamed = {"page_rows": 777, "part_bytes": MIN_PART_BYTES}

    assert ingest(source_db, store, **streamed).ok

    baseline = store.get(baseline_key("sales_order"))
    assert baseline.data == whole(source_db, "sales_order")
    assert len(baseline.data) > MIN_PART_BYTES
    assert baseline.etag.endswith('-2"')  # a multipart upload
    assert OBSERVED_METADATA in baseline.metadata
    assert state(store, "sales_order").watermark == source_db.max_last_updated("sales_order")
    assert len(state(store, "sales_order").recent) == 301  # the window's rows, not the table's

    source_db.conn.run(
        "UPDATE sales_order SET units_sold = units_sold + 1, "
        "last_updated = last_updated + interval '1 day' WHERE sales_order_id > 1000000"
    )
    assert ingest(source_db, store, **streamed).ok

    staging = store.get(staging_key("sales_order"))
    changed = [r for r in source_db.rows("sales_order") if r["sales_order_id"] > 1_000_000]
    assert staging.data == canonical("sales_order", changed)
    assert staging.etag.endswith('-2"')
    assert ingest(source_db, store, **streamed).ok
    assert staged(store, "sales_order") == []


def test_a_bad_row_in_a_late_page_writes_nothing_and_keeps_the_state(source_db, store):
    start = source_db.max_last_updated("sales_order") + timedelta(minutes=1)
    add_sales_orders(source_db, BIG, first_key=1_000_001, start=start)
    last = 1_000_000 + BIG
    source_db.update("sales_order", last, agreed_delivery_date="2022-13-45")
    streamed = {"page_rows": 1000, "part_bytes": MIN_PART_BYTES}

    report = ingest(source_db, store, **streamed)

    (failure,) = report.failures
    assert failure.table == "sales_order"
    assert f"key={last}" in (failure.error or "")
    assert "1 problem(s)" in (failure.error or "")
    assert not store.exists(baseline_key("sales_order"))  # parts went up, no object
    assert not store.exists(watermark_key("sales_order"))
    assert all(store.exists(baseline_key(t)) for t in ORDER if t != "sales_order")

    source_db.update("sales_order", last, agreed_delivery_date="2022-12-31")
    assert ingest(source_db, store, **streamed).ok
    assert store.get(baseline_key("sales_order")).data == whole(source_db, "sales_order")


class CountingStore(BucketStore):
    """The bucket, but a streamed file is only counted and hashed: what is measured is the
    ingest's own memory, not moto's copy of the object."""

    def put_stream(self, key: str, chunks: Iterable[bytes], **kwargs: Any) -> WriteResult:
        size, digest = 0, hashlib.md5()
        for chunk in chunks:
            size += len(chunk)
            digest.update(chunk)
        self.streamed = (size, digest.hexdigest())
        return WriteResult(key=key, etag=digest.hexdigest(), version_id=None)


def test_a_streamed_read_holds_a_page_not_the_table(source_db, store):
    start = source_db.max_last_updated("sales_order") + timedelta(minutes=1)
    add_sales_orders(source_db, 20_000, first_key=1_000_001, start=start)
    spec = TABLES["sales_order"]
    counting = CountingStore(store.bucket)
    with PostgresSource(lambda: source_db.credentials) as source:
        ingest = Ingest(source, counting, ListPublisher(), overlap=OVERLAP, page_rows=500)
        source.read(TABLES["staff"], None)  # connected before measuring
        tracemalloc.start()
        try:
            ingest.table(spec)
            streamed_peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.reset_peak()
            read = source.read(spec, None)  # what the ingest did before: all of it at once
            report = validate_rows(spec, read.rows, "whole")
            data = dump_rows(spec, report.rows)
            whole_peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    size, _ = counting.streamed
    assert counting.streamed == (len(data), hashlib.md5(data).hexdigest())
    print(
        f"\n{len(report.rows)} rows, {size / 2**20:.1f} MiB file: streamed peak "
        f"{streamed_peak / 2**20:.1f} MiB, whole-table peak {whole_peak / 2**20:.1f} MiB"
    )
    assert streamed_peak < 8 * 2**20  # a page of rows, a piece of the file, the window
    assert streamed_peak * 5 < whole_peak
