"""Log mode across PostgreSQL restarts: a real server of this module's own (wal2json), stopped
and started again, so the slot sends changes again; the ingest stages them again and the real
merge (moto) absorbs them. Afterwards latest equals the source, and latest and history hold
every committed version of a key once, in commit order, with its operation.

Why changes come again: peeking consumes nothing, so a crash between the staging write and the
advance peeks the same page again; and `pg_replication_slot_advance` moves the slot in memory
only, its position reaching disk at the next checkpoint (or when the slot's restart position
moves), so after an immediate shutdown the slot may be back where the last checkpoint left it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import boto3
import pg8000.native
import pytest

from ops.pg import (
    LocalPostgres,
    connect,
    create_schema,
    insert_rows,
)
from services.ingest.logical import LogicalReader
from services.merge import handler as merge_handler
from services.merge.settings import MergeSettings
from shared.changes import LSN_COLUMN, OP_COLUMN, lsn_value
from shared.layout import staging_key
from shared.reader import iter_history, read_latest, read_latest_versions
from shared.rows import row_json
from shared.storage import BucketStore
from tests.integration.ingest.conftest import BUCKET, SourceDb, own_database
from tests.integration.ingest.test_log_end_to_end import (
    BUS,
    PK,
    SLOT,
    SPEC,
    TABLE,
    ingest,
    ingest_run,
    merge_all,
    source_rows,
)

pytestmark = pytest.mark.xdist_group("postgres")

STAMP = datetime(2025, 1, 2, 3, 4, 5, 678000)
FIRST_ROWS = {1: "CARD", 2: "CASH", 3: "CHEQUE"}  # the baseline

# A key's version as the bucket tells it: its name, the operation that made it (None: the
# baseline), whether a delete ended it.
Version = tuple[str, str | None, bool]


@dataclass
class Script:
    """The source's changes, made one transaction each, and the versions they must leave."""

    db: SourceDb
    expected: dict[int, list[Version]] = field(default_factory=dict)

    def insert(self, key: int, name: str) -> None:
        row = {"payment_type_id": key, "payment_type_name": name}
        insert_rows(self.db.conn, SPEC, [row | {"created_at": STAMP, "last_updated": STAMP}])
        self.expected.setdefault(key, []).append((name, "insert", False))

    def update(self, key: int, name: str) -> None:
        self.db.update(TABLE, key, payment_type_name=name)
        self.expected[key].append((name, "update", False))

    def delete(self, key: int) -> None:
        self.db.conn.run(f"DELETE FROM {TABLE} WHERE {PK} = :key", key=key)
        assert self.db.conn.row_count == 1
        name, op, _ = self.expected[key][-1]
        self.expected[key][-1] = (name, op, True)


@dataclass
class Chain:
    """The source, its script, the bucket, the merge, and every staging file it was given."""

    script: Script
    store: BucketStore
    service: Any
    done: set[str] = field(default_factory=set)
    staged: list[list[tuple[str, int, str]]] = field(default_factory=list)

    @property
    def db(self) -> SourceDb:
        return self.script.db

    def merge(self) -> None:
        """Merge every upload not merged yet, noting each staging file's (commit position,
        key, operation) rows first (the merge deletes the staging version it merged)."""
        for version in reversed(self.store.versions(staging_key(TABLE))):
            if version.version_id not in self.done:
                rows = json.loads(self.store.get(staging_key(TABLE), version.version_id).data)
                self.staged.append([(r[LSN_COLUMN], r[PK], r[OP_COLUMN]) for r in rows])
        merge_all(self.store, self.service, self.done)

    def restaged(self) -> set[tuple[str, int, str]]:
        """The changes more than one staging file held: what the slot sent again."""
        seen: set[tuple[str, int, str]] = set()
        again: set[tuple[str, int, str]] = set()
        for rows in self.staged:
            again |= seen & set(rows)
            seen |= set(rows)
        return again


@pytest.fixture
def restart_chain(own_server: LocalPostgres, store: BucketStore) -> Iterator[Chain]:
    with own_database(own_server) as db:
        create_schema(db.conn, [SPEC])
        rows = [
            {
                "payment_type_id": k,
                "payment_type_name": n,
                "created_at": STAMP,
                "last_updated": STAMP,
            }
            for k, n in FIRST_ROWS.items()
        ]
        insert_rows(db.conn, SPEC, rows)
        boto3.client("events").create_event_bus(Name=BUS)
        dlq = boto3.client("sqs").create_queue(QueueName="restart-dlq")["QueueUrl"]
        settings = MergeSettings(
            bucket_name=BUCKET, table_name=TABLE, event_bus_name=BUS, dlq_url=dlq
        )
        script = Script(db, {k: [(n, None, False)] for k, n in FIRST_ROWS.items()})
        yield Chain(script, store, merge_handler.build_service(settings))


def reconnect(db: SourceDb) -> None:
    """The test's connection again, after the server restarted under it."""
    with contextlib.suppress(OSError, pg8000.native.InterfaceError):
        db.conn.close()
    db.conn = connect(db.credentials)


def slot_position(db: SourceDb) -> int:
    ((lsn,),) = db.conn.run(
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = :slot",
        slot=SLOT,
    )
    return lsn_value(str(lsn))


def bucket_versions(store: BucketStore) -> dict[int, list[Version]]:
    """Every version latest and history hold of each key, in commit order (the baseline's,
    which has no position, first)."""
    found: dict[int, list[tuple[int, Version]]] = {}
    for v in read_latest_versions(store, SPEC):
        position = lsn_value(v.change.lsn) if v.change and v.change.lsn else -1
        version = (v.row.model_dump()["payment_type_name"], _op(v.change, position), False)
        found.setdefault(getattr(v.row, PK), []).append((position, version))
    for _, rows in iter_history(store, SPEC):
        for h in rows:
            position = lsn_value(h.change.lsn) if h.change and h.change.lsn else -1
            version = (h.row.model_dump()["payment_type_name"], _op(h.change, position), h.deleted)
            found.setdefault(getattr(h.row, PK), []).append((position, version))
    return {key: [v for _, v in sorted(versions)] for key, versions in found.items()}


def _op(change: Any, position: int) -> str | None:
    """The operation of a log version; None for the baseline's (it has no position)."""
    return str(change.op.value) if position >= 0 else None


def assert_once_in_commit_order(script: Script, store: BucketStore) -> None:
    latest = {r.model_dump()[PK]: row_json(SPEC, r) for r in read_latest(store, SPEC).rows}
    assert latest == source_rows(script.db)
    assert bucket_versions(store) == script.expected


def first_script(script: Script) -> None:
    script.insert(10, "ONE")
    script.update(10, "TWO")
    script.update(1, "CARD-EDITED")
    script.delete(2)
    script.insert(11, "ELEVEN")
    script.update(3, "CHEQUE-EDITED")


def second_script(script: Script) -> None:
    script.update(10, "THREE")
    script.delete(11)
    script.insert(11, "ELEVEN-AGAIN")  # a re-insert is a new version
    script.update(1, "CARD-EDITED-TWICE")
    script.update(3, "CHEQUE")  # back to the baseline's very content: a version of its own


class CrashBeforeAdvance:
    """The log reader, its server crashing (immediate stop, then a start, recovery) once S3
    holds the page and before the slot advances: the advance then finds the server gone."""

    def __init__(self, inner: LogicalReader, server: LocalPostgres) -> None:
        self.inner = inner
        self.server = server
        self.crashed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def advance(self, lsn: str) -> str:
        if not self.crashed:
            self.crashed = True
            self.server.restart("immediate")
        return self.inner.advance(lsn)


def test_postgres_dying_between_the_staging_write_and_the_advance_doubles_nothing(
    restart_chain: Chain,
) -> None:
    chain = restart_chain
    db, script = chain.db, chain.script
    ingest(db, chain.store)  # the slot, then the baseline
    chain.merge()
    first_script(script)
    ingest(db, chain.store)
    chain.merge()

    second_script(script)
    report = ingest_run(db, chain.store, reader_as=lambda r: CrashBeforeAdvance(r, db.server))
    assert not report.ok  # the advance found the server gone
    chain.merge()  # the page S3 held before the crash
    assert len(chain.staged) == 2
    reconnect(db)
    script.insert(12, "AFTER-THE-CRASH")
    ingest(db, chain.store)  # the unadvanced page again, and what came after
    chain.merge()

    _, crashed, again = chain.staged
    assert set(crashed) <= set(again)  # the slot sent the unadvanced page again
    assert (12, "insert") in {(key, op) for _, key, op in again}
    assert_once_in_commit_order(script, chain.store)
    assert ingest_run(db, chain.store).tables[0].rows_written == 0  # advanced past it all


def test_an_advance_lost_to_an_immediate_shutdown_resends_and_doubles_nothing(
    restart_chain: Chain,
) -> None:
    chain = restart_chain
    db, script = chain.db, chain.script
    ingest(db, chain.store)
    chain.merge()
    went_back = []
    # Each round advances, then the server crashes. Its slot goes back where disk has it
    # unless a running-xacts record (the bgwriter logs one every 15 s) moved it in between,
    # so three rounds: at least one is sent again.
    for step in (first_script, second_script, lambda s: s.insert(12, "TWELVE")):
        step(script)
        ingest(db, chain.store)
        chain.merge()
        advanced = slot_position(db)
        db.server.restart("immediate")  # no shutdown checkpoint
        reconnect(db)
        went_back.append(slot_position(db) < advanced)
    script.update(12, "TWELVE-EDITED")
    ingest(db, chain.store)
    chain.merge()

    assert any(went_back), "no crash lost the slot's advance: nothing was sent again"
    assert chain.restaged()  # what the lost advances had consumed was staged again
    assert_once_in_commit_order(script, chain.store)


def test_a_clean_restart_keeps_the_advance_and_sends_nothing_again(
    restart_chain: Chain,
) -> None:
    chain = restart_chain
    db, script = chain.db, chain.script
    ingest(db, chain.store)
    chain.merge()
    first_script(script)
    ingest(db, chain.store)
    chain.merge()
    advanced = slot_position(db)
    db.server.restart("fast")  # the shutdown checkpoint writes the slot
    reconnect(db)
    assert slot_position(db) == advanced
    second_script(script)
    ingest(db, chain.store)
    chain.merge()

    assert len(chain.staged) == 2
    assert not chain.restaged()
    assert_once_in_commit_order(script, chain.store)
