"""Log mode end to end: a script of changes at a real PostgreSQL (wal2json), log-mode ingest
runs, and the real merge of every staged version (moto). Afterwards latest equals the source,
and latest and history hold every committed version of a key, in commit order, each once,
with its operation; deletes leave latest and reach history marked deleted."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import timedelta
from typing import Any

import pytest

from services.ingest.ingest import IngestReport, run_ingest
from services.ingest.log_ingest import SlotCapture
from services.ingest.logical import LogicalReader
from services.ingest.source import connect
from services.merge.source import ObjectRef
from shared.changes import LSN_COLUMN, OP_COLUMN, XID_COLUMN, lsn_value
from shared.events import EventPublisher
from shared.layout import baseline_key, staging_key
from shared.reader import iter_history, read_latest, read_latest_versions
from shared.rows import row_json
from shared.storage import BucketStore
from shared.tables import TABLES
from tests.integration.ingest.conftest import BUCKET, CHAIN_BUS, CHAIN_TABLE, SourceDb
from tests.integration.ingest.test_logical import new_payment_type

pytestmark = pytest.mark.xdist_group("postgres")

SLOT = "ingest_e2e_test"
TABLE = CHAIN_TABLE
SPEC = TABLES[TABLE]
PK = SPEC.primary_key
BUS = CHAIN_BUS


def ingest_run(
    db: SourceDb,
    store: BucketStore,
    *,
    max_changes: int = 1000,
    reader_as: Callable[[LogicalReader], Any] = lambda reader: reader,
) -> IngestReport:
    """One log-mode run (`reader_as` may wrap the reader, to make it fail)."""
    source = db.source()
    try:
        with LogicalReader(lambda: db.credentials, SLOT, [SPEC]) as reader:
            return run_ingest(
                source,
                store,
                EventPublisher(BUS),
                overlap=timedelta(minutes=5),
                tables=[SPEC],
                log=SlotCapture(reader_as(reader), store, [TABLE], max_changes=max_changes),
            )
    finally:
        source.close()


def ingest(db: SourceDb, store: BucketStore, *, max_changes: int = 1000) -> None:
    report = ingest_run(db, store, max_changes=max_changes)
    assert report.ok, report


def merge_all(store: BucketStore, service: Any, done: set[str]) -> None:
    """Every uploaded version not merged yet, oldest first, as the notifications would."""
    for key in (baseline_key(TABLE), staging_key(TABLE)):
        for version in reversed(store.versions(key)):
            if version.version_id not in done:
                ref = ObjectRef(BUCKET, key, version.version_id, message_body="{}")
                service.process(ref)
                done.add(version.version_id)


def name_of(item: Any) -> str:
    return str(item.row.model_dump()["payment_type_name"])


def source_rows(db: SourceDb) -> dict[int, str]:
    rows = SPEC.row_model.model_validate
    return {r[PK]: row_json(SPEC, rows(r)) for r in db.rows(TABLE)}


def test_every_version_and_every_delete_reach_latest_and_history_once(chain):
    db, store, service = chain
    done: set[str] = set()
    ingest(db, store)  # the slot, then the baseline
    merge_all(store, service, done)
    first_key = min(source_rows(db))

    new_payment_type(db, 950, "ONE")
    db.update(TABLE, 950, payment_type_name="TWO")
    db.update(TABLE, 950, payment_type_name="THREE")  # two edits inside one window
    db.update(TABLE, first_key, payment_type_name="EDITED")
    ingest(db, store)
    merge_all(store, service, done)

    db.conn.run(f"DELETE FROM {TABLE} WHERE {PK} = 950")
    new_payment_type(db, 950, "AGAIN")  # a re-insert is a new version
    db.conn.run(f"DELETE FROM {TABLE} WHERE {PK} = {first_key}")
    for key in range(960, 975):  # a backlog of several pages
        new_payment_type(db, key, f"K{key}")
    ingest(db, store, max_changes=4)
    merge_all(store, service, done)

    latest = {r.model_dump()[PK]: row_json(SPEC, r) for r in read_latest(store, SPEC).rows}
    assert latest == source_rows(db)
    history = [row for _, rows in iter_history(store, SPEC) for row in rows]
    of_950 = sorted(
        (h for h in history if getattr(h.row, PK) == 950),
        key=lambda h: lsn_value(h.change.lsn) if h.change and h.change.lsn else -1,
    )
    # each superseded version once, in commit order, with the operation that made it
    assert [name_of(h) for h in of_950] == ["ONE", "TWO", "THREE"]
    assert [h.change.op.value for h in of_950 if h.change] == ["insert", "update", "update"]
    assert of_950[-1].deleted  # THREE was deleted; AGAIN is a new version
    assert latest[950].count("AGAIN") == 1
    # first_key's last row (EDITED) is in history marked deleted (history's order is not kept)
    deleted = [name_of(h) for h in history if getattr(h.row, PK) == first_key and h.deleted]
    assert deleted == ["EDITED"]

    before = {k: store.get(k).data for k in store.keys("latest/")}
    merge_all(store, service, set())  # every batch again: a no-op
    assert {k: store.get(k).data for k in store.keys("latest/")} == before


def test_the_staged_operations_are_what_the_source_did(chain):
    db, store, _ = chain
    ingest(db, store)
    new_payment_type(db, 951, "A")
    db.update(TABLE, 951, payment_type_name="B")
    db.conn.run(f"DELETE FROM {TABLE} WHERE {PK} = 951")
    ingest(db, store)
    (latest_version, *_) = store.versions(staging_key(TABLE))
    rows = json.loads(store.get(staging_key(TABLE), latest_version.version_id).data)
    assert [r[OP_COLUMN] for r in rows] == ["insert", "update", "delete"]


class AdvanceFailsOnce:
    """The log reader, dying once just before the slot advance (after S3 holds the page)."""

    def __init__(self, inner: LogicalReader) -> None:
        self.inner = inner
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def advance(self, lsn: str) -> str:
        if not self.failed:
            self.failed = True
            raise ConnectionError("the function died before the advance")
        return self.inner.advance(lsn)


def test_a_crash_between_the_staging_write_and_the_advance_doubles_nothing(chain):
    db, store, service = chain
    done: set[str] = set()
    ingest(db, store)
    merge_all(store, service, done)
    new_payment_type(db, 952, "A")
    db.update(TABLE, 952, payment_type_name="B")
    report = ingest_run(db, store, reader_as=AdvanceFailsOnce)
    assert not report.ok
    ingest(db, store)  # peeks the same changes again and stages them again
    assert len(store.versions(staging_key(TABLE))) == 2
    merge_all(store, service, done)
    history = [row for _, rows in iter_history(store, SPEC) for row in rows]
    assert [name_of(h) for h in history if getattr(h.row, PK) == 952] == ["A"]
    latest = {r.model_dump()[PK]: row_json(SPEC, r) for r in read_latest(store, SPEC).rows}
    assert latest == source_rows(db)


def test_a_crash_after_the_baseline_before_its_state_reads_it_again_and_loses_nothing(
    chain,
):
    db, store, service = chain
    events = store.client.meta.events

    def die_on_state(params: dict[str, Any], **_: Any) -> None:
        if params["Key"].startswith("_state/ingest/") and params["Key"].endswith(f"{TABLE}.json"):
            raise ConnectionError("the function died before saving the table's state")

    events.register("provide-client-params.s3.PutObject", die_on_state, unique_id="die")
    first = ingest_run(db, store)
    events.unregister("provide-client-params.s3.PutObject", unique_id="die")
    assert not first.ok
    new_payment_type(db, 953, "BETWEEN")  # after the slot, before the second baseline
    ingest(db, store)  # the baseline again (no state), then the log
    assert len(store.versions(baseline_key(TABLE))) == 2
    merge_all(store, service, set())
    latest = {r.model_dump()[PK]: row_json(SPEC, r) for r in read_latest(store, SPEC).rows}
    assert latest == source_rows(db)


def within(seconds: float, run: Callable[[], IngestReport]) -> IngestReport:
    """`run` on a thread of its own, failing the test if it takes longer than `seconds`."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(run)
        try:
            return future.result(timeout=seconds)
        except FutureTimeout:
            pytest.fail(f"the ingest run took over {seconds} s: blocked by the open transaction")


def staged_files(store: BucketStore) -> list[list[dict[str, Any]]]:
    versions = reversed(store.versions(staging_key(TABLE)))  # oldest first
    return [json.loads(store.get(staging_key(TABLE), v.version_id).data) for v in versions]


def test_a_transaction_open_across_a_whole_run_arrives_once_after_its_commit(chain):
    db, store, service = chain
    done: set[str] = set()
    ingest(db, store)  # the slot (made before the transaction opens), then the baseline
    merge_all(store, service, done)
    edited, (original,) = (
        min(source_rows(db)),
        [r["payment_type_name"] for r in db.rows(TABLE) if r[PK] == min(source_rows(db))],
    )
    other = connect(db.credentials)
    try:
        other.run("BEGIN")
        opened = SourceDb(db.server, db.name, other)
        new_payment_type(opened, 990, "OPEN")  # its xid is older than the commits below
        opened.update(TABLE, edited, payment_type_name="EDITED-OPEN")
        new_payment_type(db, 991, "SHUT")  # committed while the other is open
        db.update(TABLE, 991, payment_type_name="SHUT-EDITED")
        report = within(30, lambda: ingest_run(db, store))
        assert report.ok, report
        (during,) = staged_files(store)  # read before the merge deletes it
        merge_all(store, service, done)
        assert [(r[PK], r[OP_COLUMN]) for r in during] == [(991, "insert"), (991, "update")]
        latest = {r.model_dump()[PK]: row_json(SPEC, r) for r in read_latest(store, SPEC).rows}
        assert latest == source_rows(db)  # what a new session sees: not the open rows
        assert 990 not in latest
        assert original in latest[edited]
        other.run("COMMIT")
    finally:
        other.close()
    db.update(TABLE, 990, payment_type_name="AFTER")  # after the commit
    db.update(TABLE, edited, payment_type_name="EDITED-AFTER")
    assert within(30, lambda: ingest_run(db, store)).ok
    (after,) = staged_files(store)
    merge_all(store, service, done)
    assert [(r[PK], r[OP_COLUMN]) for r in after] == [
        (990, "insert"),
        (edited, "update"),
        (990, "update"),
        (edited, "update"),
    ]  # the open transaction's rows, once, at its commit: after 991's, before what followed
    assert after[0][XID_COLUMN] < during[0][XID_COLUMN]  # begun first, committed later
    assert lsn_value(after[0][LSN_COLUMN]) > lsn_value(during[-1][LSN_COLUMN])
    assert ingest_run(db, store).tables[0].rows_written == 0

    latest = {r.model_dump()[PK]: row_json(SPEC, r) for r in read_latest(store, SPEC).rows}
    assert latest == source_rows(db)
    history = [row for _, rows in iter_history(store, SPEC) for row in rows]

    def versions(key: int) -> list[tuple[str, str | None]]:
        held = [(h.row, h.change) for h in history if getattr(h.row, PK) == key]
        held += [(v.row, v.change) for v in read_latest_versions(store, SPEC)]
        mine = [(row, change) for row, change in held if getattr(row, PK) == key]
        mine.sort(key=lambda rc: lsn_value(rc[1].lsn) if rc[1] and rc[1].lsn else -1)
        return [
            (row.model_dump()["payment_type_name"], c.op.value if c and c.lsn else None)
            for row, c in mine
        ]

    assert versions(990) == [("OPEN", "insert"), ("AFTER", "update")]
    assert versions(edited) == [
        (original, None),
        ("EDITED-OPEN", "update"),
        ("EDITED-AFTER", "update"),
    ]
    assert versions(991) == [("SHUT", "insert"), ("SHUT-EDITED", "update")]


def poll(db: SourceDb, store: BucketStore) -> None:
    source = db.source()
    try:
        report = run_ingest(
            source, store, EventPublisher(BUS), overlap=timedelta(minutes=5), tables=[SPEC]
        )
    finally:
        source.close()
    assert report.ok, report


def test_polling_on_the_same_script_loses_what_it_documents_and_nothing_else(chain):
    """Polling sees one version per window (the last) and, on a reconciled table, infers
    deletes; a delete and re-insert inside one window is one update to it."""
    db, store, service = chain
    done: set[str] = set()
    poll(db, store)
    merge_all(store, service, done)
    first_key = min(source_rows(db))
    (original,) = [r["payment_type_name"] for r in db.rows(TABLE) if r[PK] == first_key]
    new_payment_type(db, 950, "ONE")
    db.update(TABLE, 950, payment_type_name="TWO")
    db.update(TABLE, 950, payment_type_name="THREE")
    db.update(TABLE, first_key, payment_type_name="EDITED")
    poll(db, store)
    merge_all(store, service, done)
    db.conn.run(f"DELETE FROM {TABLE} WHERE {PK} = 950")
    new_payment_type(db, 950, "AGAIN")
    db.conn.run(f"DELETE FROM {TABLE} WHERE {PK} = {first_key}")
    poll(db, store)
    merge_all(store, service, done)

    latest = {r.model_dump()[PK]: row_json(SPEC, r) for r in read_latest(store, SPEC).rows}
    assert latest == source_rows(db)  # the inferred delete took first_key out
    history = [row for _, rows in iter_history(store, SPEC) for row in rows]
    assert [name_of(h) for h in history if getattr(h.row, PK) == 950] == ["THREE"]
    of_first = {name_of(h): h.deleted for h in history if getattr(h.row, PK) == first_key}
    assert of_first == {original: False, "EDITED": True}  # its last row, deleted
