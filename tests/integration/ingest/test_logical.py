"""The log reader (services/ingest/logical.py) against a real PostgreSQL with wal2json."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pg8000.native
import pytest

from ops.pg import LocalPostgres, connect, load_snapshot
from ops.sample_data import SampleDatabase
from services.ingest.logical import (
    TOAST_UNCHANGED_COLUMN,
    Change,
    ChangePage,
    LogicalCaptureError,
    LogicalReader,
    SlotLostError,
    SlotMissingError,
    consume,
    staging_row,
)
from services.ingest.source import PostgresSource, SourceCredentials, SourceUnavailableError
from shared.changes import COMMIT_TS_COLUMN, LSN_COLUMN, OP_COLUMN, XID_COLUMN, lsn_value
from shared.tables import TABLES
from tests.integration.ingest.conftest import SourceDb, drop_slots, need_wal2json, own_database

pytestmark = pytest.mark.xdist_group("postgres")

SLOT = "ingest_test"
PAGE = 1000


@pytest.fixture
def log_db(source_db: SourceDb) -> Iterator[SourceDb]:
    """A test database (the small totesys template) with a wal2json slot; the slot is dropped
    before the database is."""
    need_wal2json(source_db.server)
    yield source_db
    drop_slots(source_db.conn)


def reader_for(db: SourceDb, *tables: str) -> LogicalReader:
    specs = [TABLES[t] for t in tables or TABLES]
    reader = LogicalReader(lambda: db.credentials, SLOT, specs)
    reader.ensure_slot()
    return reader


@pytest.fixture
def reader(log_db: SourceDb) -> Iterator[LogicalReader]:
    with reader_for(log_db) as log:
        yield log


def window(reader: LogicalReader, page: int = PAGE) -> ChangePage:
    return reader.peek(reader.current_lsn(), page)


def summary(changes: list[Change]) -> list[tuple[str, str, Any]]:
    spec_key = {name: spec.primary_key for name, spec in TABLES.items()}
    out = []
    for c in changes:
        row = c.identity if c.action == "delete" else c.columns
        out.append((c.action.value, c.table, row[spec_key[c.table]]))
    return out


def new_payment_type(db: SourceDb, key: int, name: str = "CARD") -> dict[str, Any]:
    stamp = datetime(2025, 1, 2, 3, 4, 5, 678000)
    row = {
        "payment_type_id": key,
        "payment_type_name": name,
        "created_at": stamp,
        "last_updated": stamp,
    }
    db.insert("payment_type", row)
    return row


def test_inserts_come_as_one_transaction_each_in_commit_order(reader, log_db):
    new_payment_type(log_db, 901)
    new_payment_type(log_db, 902)

    page = window(reader)

    assert page.complete
    assert summary(page.changes()) == [
        ("insert", "payment_type", 901),
        ("insert", "payment_type", 902),
    ]
    first, second = page.transactions
    assert lsn_value(first.commit_lsn) < lsn_value(second.commit_lsn)
    change = page.changes()[0]
    assert change.columns == {
        "payment_type_id": 901,
        "payment_type_name": "CARD",
        "created_at": datetime(2025, 1, 2, 3, 4, 5, 678000),
        "last_updated": datetime(2025, 1, 2, 3, 4, 5, 678000),
    }
    assert change.identity == {}
    assert change.xid == first.xid
    assert change.commit_lsn == first.commit_lsn
    assert change.commit_ts.tzinfo is not None
    assert abs(change.commit_ts - log_db.clock()) < timedelta(minutes=1)
    assert page.by_table() == {"payment_type": page.changes()}


def test_two_updates_of_one_key_in_a_window_are_two_changes_in_commit_order(reader, log_db):
    row = log_db.rows("sales_order")[0]
    key = row["sales_order_id"]
    log_db.update("sales_order", key, units_sold=11)
    log_db.update("sales_order", key, units_sold=22, unit_price=Decimal("3.10"))

    changes = window(reader).changes()

    assert [(c.action, c.columns["units_sold"]) for c in changes] == [
        ("update", 11),
        ("update", 22),
    ]
    assert changes[1].columns["unit_price"] == Decimal("3.10")
    assert str(changes[1].columns["unit_price"]) == "3.10"  # scale kept, as pg8000 reads it
    assert all(c.identity == {"sales_order_id": key} for c in changes)  # REPLICA IDENTITY DEFAULT
    assert lsn_value(changes[0].commit_lsn) < lsn_value(changes[1].commit_lsn)
    assert changes[1].columns == log_db.rows("sales_order")[0]
    rows = [staging_row(c) for c in changes]
    assert [r[OP_COLUMN] for r in rows] == ["update", "update"]
    assert [r[LSN_COLUMN] for r in rows] == [c.commit_lsn for c in changes]


def test_a_delete_is_a_tombstone_with_the_key(reader, log_db):
    key = log_db.rows("payment_type")[0]["payment_type_id"]
    log_db.conn.run("DELETE FROM payment_type WHERE payment_type_id = :k", k=key)

    (change,) = window(reader).changes()

    assert change.action == "delete"
    assert change.columns == {}
    assert change.identity == {"payment_type_id": key}
    row = staging_row(change)
    assert row == {
        "payment_type_id": key,
        OP_COLUMN: "delete",
        COMMIT_TS_COLUMN: change.commit_ts.replace(tzinfo=None),  # naive UTC
        LSN_COLUMN: change.commit_lsn,
        XID_COLUMN: change.xid,
    }


def test_replica_identity_full_gives_the_old_row(reader, log_db):
    log_db.conn.run("ALTER TABLE payment_type REPLICA IDENTITY FULL")
    old = log_db.rows("payment_type")[1]
    key = old["payment_type_id"]
    log_db.update("payment_type", key, payment_type_name="RENAMED")
    log_db.conn.run("DELETE FROM payment_type WHERE payment_type_id = :k", k=key)

    update, delete = window(reader).changes()

    assert update.identity == old
    assert update.columns == {**old, "payment_type_name": "RENAMED"}
    assert delete.identity == {**old, "payment_type_name": "RENAMED"}
    tombstone = staging_row(delete)
    assert {k: v for k, v in tombstone.items() if not k.startswith("_")} == delete.identity
    assert tombstone[OP_COLUMN] == "delete"


def test_an_unchanged_toasted_value_is_left_out_of_an_update_and_named(reader, log_db):
    design = log_db.rows("design")[0]
    key = design["design_id"]
    # Random text does not compress: stored out of line (TOAST), not logged when unchanged.
    log_db.conn.run(
        "UPDATE design SET file_location = (SELECT string_agg(md5(random()::text), '') "
        "FROM generate_series(1, 400)) WHERE design_id = :k",
        k=key,
    )
    log_db.update("design", key, design_name="Granite")
    log_db.conn.run("ALTER TABLE design REPLICA IDENTITY FULL")
    log_db.update("design", key, design_name="Marble")

    toasting, default, full = window(reader).changes()

    long_value = toasting.columns["file_location"]
    assert len(long_value) == 32 * 400
    assert toasting.unchanged_toast == ()
    assert "file_location" not in default.columns  # absent, not null
    assert default.unchanged_toast == ("file_location",)
    assert "file_location" not in staging_row(default)  # the merge fills it from latest
    assert staging_row(default)[TOAST_UNCHANGED_COLUMN] == ["file_location"]
    assert TOAST_UNCHANGED_COLUMN not in staging_row(full)
    assert full.columns["file_location"] == long_value  # FULL: taken from the old row
    assert full.unchanged_toast == ()


def test_a_transaction_open_across_a_peek_is_seen_after_it_commits(reader, log_db):
    other = connect(log_db.credentials)
    try:
        other.run("BEGIN")
        new_payment_type(SourceDb(log_db.server, log_db.name, other), 903, "OPEN")
        new_payment_type(log_db, 904, "SHUT")

        first = window(reader)
        assert summary(first.changes()) == [("insert", "payment_type", 904)]
        reader.advance(first.end_lsn)
        assert window(reader).changes() == []  # still open: not seen

        other.run("COMMIT")
    finally:
        other.close()

    later = window(reader)

    (change,) = later.changes()
    assert summary([change]) == [("insert", "payment_type", 903)]
    # At its commit position: after the window that could not see it (here, exactly at its end).
    assert lsn_value(change.commit_lsn) >= lsn_value(first.end_lsn)


def test_peeking_twice_without_advancing_returns_the_same_changes(reader, log_db):
    new_payment_type(log_db, 905)
    log_db.update("payment_type", 905, payment_type_name="AGAIN")
    upto = reader.current_lsn()

    first = reader.peek(upto, PAGE)
    second = reader.peek(upto, PAGE)

    assert first == second
    assert len(first.changes()) == 2


def test_after_advancing_nothing_is_peeked_and_advancing_again_is_no_error(reader, log_db):
    new_payment_type(log_db, 906)
    page = window(reader)
    assert len(page.changes()) == 1

    assert reader.advance(page.end_lsn) == page.end_lsn
    assert window(reader).changes() == []
    # A retry of the same advance, and one to a position already passed: done, not an error.
    assert reader.advance(page.end_lsn) == page.end_lsn
    assert reader.advance(page.start_lsn) == page.end_lsn
    assert reader.health().confirmed_flush_lsn == page.end_lsn


def test_an_idle_window_advances_the_slot_so_it_pins_no_wal(reader, log_db):
    before = reader.health().confirmed_flush_lsn
    log_db.conn.run("CREATE TABLE unrelated (id integer PRIMARY KEY)")
    log_db.conn.run("INSERT INTO unrelated VALUES (1)")

    page = window(reader)

    assert page.changes() == []
    assert page.complete
    reader.advance(page.end_lsn)
    assert lsn_value(reader.health().confirmed_flush_lsn or "0/0") > lsn_value(before or "0/0")


def test_a_backlog_larger_than_a_page_comes_in_several_pages_none_lost_or_doubled(reader, log_db):
    keys = list(range(1000, 1060))
    for key in keys:
        new_payment_type(log_db, key)
    log_db.conn.run("BEGIN")
    for key in keys[:25]:  # one transaction bigger than a page: it comes whole
        log_db.update("payment_type", key, payment_type_name="BIG")
    log_db.conn.run("COMMIT")
    upto = reader.current_lsn()
    new_payment_type(log_db, 2000)  # after the window: not in it

    staged: list[Change] = []
    pages = consume(reader, upto, 10, lambda page: staged.extend(page.changes()))

    assert len(pages) > 3
    assert [p.complete for p in pages] == [False] * (len(pages) - 1) + [True]
    assert pages[-1].end_lsn == upto
    for page in pages[:-1]:
        assert page.end_lsn == page.transactions[-1].end_lsn
    assert summary(staged) == [("insert", "payment_type", k) for k in keys] + [
        ("update", "payment_type", k) for k in keys[:25]
    ]
    big = next(p for p in pages if any(len(t.changes) == 25 for t in p.transactions))
    assert len(big.transactions) == 1
    assert summary(window(reader).changes()) == [("insert", "payment_type", 2000)]


def test_a_page_not_made_durable_is_peeked_again(reader, log_db):
    new_payment_type(log_db, 907)
    upto = reader.current_lsn()

    def fail(page: ChangePage) -> None:
        raise TimeoutError("killed before the staging write returned")

    with pytest.raises(TimeoutError):
        consume(reader, upto, PAGE, fail)

    assert summary(reader.peek(upto, PAGE).changes()) == [("insert", "payment_type", 907)]


def test_only_the_watched_tables_are_read(log_db):
    with reader_for(log_db, "payment_type") as only:
        log_db.update("staff", log_db.rows("staff")[0]["staff_id"], first_name="Zed")
        new_payment_type(log_db, 908)

        assert summary(window(only).changes()) == [("insert", "payment_type", 908)]


def test_a_truncate_is_reported_not_hidden(reader, log_db):
    log_db.conn.run("TRUNCATE transaction")

    page = window(reader)

    assert page.truncated() == ["transaction"]
    assert page.changes() == []


def test_health_reports_the_slot_and_its_lag(reader, log_db):
    new_payment_type(log_db, 909)

    health = reader.health()

    assert (health.slot, health.plugin, health.database) == (SLOT, "wal2json", log_db.name)
    assert health.wal_status == "reserved"
    assert not health.lost
    assert (health.lag_bytes or 0) > 0
    assert (health.retained_bytes or 0) >= (health.lag_bytes or 0)
    assert "wal_status=reserved" in health.describe()
    reader.advance(window(reader).end_lsn)
    assert (reader.health().lag_bytes or 0) < (health.lag_bytes or 0)


def test_ensure_slot_creates_once_and_a_missing_slot_is_named(log_db):
    log = LogicalReader(lambda: log_db.credentials, "ingest_other", [TABLES["staff"]])
    with log:
        with pytest.raises(SlotMissingError, match="ingest_other"):
            log.health()
        assert log.ensure_slot() is True
        assert log.ensure_slot() is False
        log.drop_slot()
        with pytest.raises(SlotMissingError, match="ingest_other"):
            log.peek(log.current_lsn(), PAGE)


def test_every_totesys_column_reads_as_polling_reads_it(reader, log_db):
    """Each registry table's rows, changed in place, come through the log with the values and
    Python types PostgresSource.read gives (timestamps as datetime, money as Decimal...)."""
    for name, spec in TABLES.items():
        log_db.conn.run(
            f"UPDATE {pg8000.native.identifier(name)} SET last_updated = last_updated "
            f"+ interval '1 microsecond' WHERE {pg8000.native.identifier(spec.primary_key)} "
            f"IN (SELECT {pg8000.native.identifier(spec.primary_key)} "
            f"FROM {pg8000.native.identifier(name)} ORDER BY 1 LIMIT 40)"
        )

    by_table = window(reader, 100_000).by_table()

    with PostgresSource(lambda: log_db.credentials) as source:
        for name, spec in TABLES.items():
            polled = {r[spec.primary_key]: r for r in source.read(spec, None).rows}
            changes = by_table[name]
            assert changes, name
            for change in changes:
                row = polled[change.columns[spec.primary_key]]
                assert change.columns == row, name
                for column, value in row.items():
                    assert type(change.columns[column]) is type(value), (name, column)


# --- restarts and a lost slot: a server of their own -----------------------------------------


@pytest.fixture
def restartable(own_server: LocalPostgres) -> Iterator[SourceDb]:
    with own_database(own_server) as db:
        load_snapshot(db.conn, SampleDatabase(seed=5, orders=10).snapshot())
        yield db


def _reconnect(db: SourceDb) -> SourceDb:
    db.conn.close()
    return SourceDb(db.server, db.name, connect(db.credentials))


def test_a_clean_restart_keeps_the_slot_where_it_was(restartable):
    db = restartable
    log = reader_for(db, "payment_type")
    new_payment_type(db, 910)
    consumed = window(log)
    log.advance(consumed.end_lsn)
    new_payment_type(db, 911)
    pending = window(log)
    log.close()

    db.server.restart("fast")
    db = _reconnect(db)

    with reader_for(db, "payment_type") as again:
        # Nothing advanced past is sent again; what was only peeked is, unchanged.
        assert again.peek(pending.upto_lsn, PAGE) == pending
        assert summary(pending.changes()) == [("insert", "payment_type", 911)]
    db.conn.close()


def test_after_a_crash_changes_may_repeat_but_none_is_lost(restartable):
    db = restartable
    log = reader_for(db, "payment_type")
    new_payment_type(db, 912)
    consumed = window(log)
    log.advance(consumed.end_lsn)
    new_payment_type(db, 913)
    log.close()

    db.server.restart("immediate")  # no checkpoint: the advance may not have been persisted
    db = _reconnect(db)

    with reader_for(db, "payment_type") as again:
        seen = summary(window(again).changes())
    assert seen in (
        [("insert", "payment_type", 913)],
        [("insert", "payment_type", 912), ("insert", "payment_type", 913)],
    )
    db.conn.close()


def test_a_lost_slot_is_reported_clearly(restartable):
    db = restartable
    log = reader_for(db, "payment_type")
    new_payment_type(db, 914)
    db.conn.run("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
    db.conn.run("SELECT pg_reload_conf()")
    try:
        for _ in range(4):  # WAL the slot needs, pushed out past the limit
            db.conn.run("CREATE TABLE IF NOT EXISTS filler (x text)")
            db.conn.run("INSERT INTO filler SELECT repeat('x', 1000) FROM generate_series(1, 2000)")
            db.conn.run("SELECT pg_switch_wal()")
            db.conn.run("CHECKPOINT")

        health = log.health()
        assert health.lost, health
        assert "re-baseline" in health.describe()
        with pytest.raises(SlotLostError, match="lost"):
            window(log)
    finally:
        db.conn.run("ALTER SYSTEM RESET max_slot_wal_keep_size")
        db.conn.run("SELECT pg_reload_conf()")
        log.close()
        db.conn.close()


def test_a_user_without_replication_rights_is_told_what_it_needs(log_db):
    role = f"noreplication_{uuid.uuid4().hex[:8]}"
    log_db.conn.run(f"CREATE ROLE {role} LOGIN PASSWORD 'pw'")
    try:
        credentials = log_db.credentials.model_copy(update={"user": role, "password": "pw"})
        with (
            LogicalReader(lambda: credentials, SLOT, [TABLES["staff"]]) as log,
            pytest.raises(LogicalCaptureError, match="rds_replication"),
        ):
            log.ensure_slot()
    finally:
        log_db.conn.run(f"DROP ROLE {role}")


def test_an_unreachable_source_is_named():
    from ops.pg import free_port

    dead = SourceCredentials(
        host="127.0.0.1", port=free_port(), database="totesys", user="u", password="p"
    )
    with (
        LogicalReader(lambda: dead, SLOT, [TABLES["staff"]]) as log,
        pytest.raises(SourceUnavailableError, match=r"cannot connect to 127\.0\.0\.1"),
    ):
        log.current_lsn()
