"""A column added at the real PostgreSQL source (`ALTER TABLE ... ADD COLUMN`), captured by
polling (reconciled and streamed) and by the log, merged by the real merge (moto), under each
schema policy (`TableSpec.schema_policy`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from services.ingest.ingest import IngestReport, run_ingest
from shared.events import EventPublisher
from shared.quarantine import REPORT_SUFFIX
from shared.reader import iter_history, read_latest
from shared.rows import row_json, validate_rows
from shared.schema_state import TableSchema, effective_spec, schema_key
from shared.storage import BucketStore
from shared.tables import TABLES
from tests.integration.ingest.conftest import SourceDb
from tests.integration.ingest.test_log_end_to_end import (
    BUS,
    PK,
    SPEC,
    TABLE,
    ingest_run,
    merge_all,
)
from tests.integration.merge_pipeline import registry_entry

pytestmark = pytest.mark.xdist_group("postgres")

CAPTURES = ["log", "poll-reconciled", "poll-streamed"]
ADDED = "ADD COLUMN note text, ADD COLUMN rank integer, ADD COLUMN meta jsonb"


@pytest.fixture(params=CAPTURES)
def capture(request: pytest.FixtureRequest) -> Iterator[str]:
    with registry_entry(TABLE, reconcile=request.param != "poll-streamed"):
        yield request.param


def run(db: SourceDb, store: BucketStore, capture: str) -> IngestReport:
    if capture == "log":
        return ingest_run(db, store)
    source = db.source()
    try:
        return run_ingest(
            source,
            store,
            EventPublisher(BUS),
            overlap=timedelta(minutes=5),
            tables=[TABLES[TABLE]],
        )
    finally:
        source.close()


def run_and_merge(db: SourceDb, store: BucketStore, service: Any, done: set[str], capture: str):
    report = run(db, store, capture)
    assert report.ok, report
    merge_all(store, service, done)
    return report


def source_texts(db: SourceDb, store: BucketStore) -> dict[int, str]:
    """The source's rows as the bucket's schema reads them."""
    spec = effective_spec(store, TABLES[TABLE])
    rows = validate_rows(spec, db.rows(TABLE), "source").rows
    return {getattr(r, PK): row_json(spec, r) for r in rows}


def latest_texts(store: BucketStore) -> dict[int, str]:
    spec = effective_spec(store, TABLES[TABLE])
    return {getattr(r, PK): row_json(spec, r) for r in read_latest(store, spec).rows}


def change_the_source(db: SourceDb) -> int:
    """Add three columns, then set them on one row (two transactions), stamped now."""
    key: int = min(r[PK] for r in db.rows(TABLE))
    db.conn.run(f"ALTER TABLE {TABLE} {ADDED}")
    db.update(TABLE, key, payment_type_name="NOTED", note="hello", rank=3, last_updated=db.clock())
    db.conn.run(f"""UPDATE {TABLE} SET meta = '{{"a": [1, 2]}}', last_updated = clock_timestamp()
                    WHERE {PK} = :key""", key=key)  # fmt: skip
    return key


def test_add_nullable_a_column_added_at_the_source_reaches_latest_and_history(chain, capture):
    db, store, service = chain
    done: set[str] = set()
    with registry_entry(TABLE, schema_policy="add_nullable"):
        run_and_merge(db, store, service, done, capture)
        before = latest_texts(store)
        key = change_the_source(db)
        run_and_merge(db, store, service, done, capture)

        assert list(store.keys(f"quarantine/{TABLE}/")) == []
        schema = TableSchema.model_validate_json(store.get(schema_key(TABLE)).data)
        assert [c.name for c in schema.added] == ["note", "rank", "meta"]  # the table's order
        latest = latest_texts(store)
        assert latest == source_texts(db, store)
        noted = json.loads(latest[key])
        assert (noted["note"], noted["rank"], noted["meta"]) == ("hello", 3, '{"a": [1, 2]}')
        others = [json.loads(text) for k, text in latest.items() if k != key]
        assert {(o["note"], o["rank"], o["meta"]) for o in others} == {(None, None, None)}
        spec = effective_spec(store, TABLES[TABLE])
        replaced = [
            row_json(spec, h.row)
            for _, rows in iter_history(store, spec)
            for h in rows
            if getattr(h.row, PK) == key
        ]
        assert json.loads(before[key]) | {"note": None, "rank": None, "meta": None} in [
            json.loads(text) for text in replaced
        ]  # the row from before the column, reading null

        again = run_and_merge(db, store, service, done, capture)
        assert [t.rows_written for t in again.tables] == [0]  # nothing looks changed
        assert latest_texts(store) == latest


def test_stop_a_column_added_at_the_source_quarantines_and_names_the_drift(chain, capture):
    db, store, service = chain
    done: set[str] = set()
    assert TABLES[TABLE].schema_policy == "stop"
    run_and_merge(db, store, service, done, capture)
    before = latest_texts(store)
    change_the_source(db)
    run_and_merge(db, store, service, done, capture)

    reports = [k for k in store.keys(f"quarantine/{TABLE}/") if k.endswith(REPORT_SUFFIX)]
    assert reports
    for key in reports:
        report = json.loads(store.get(key).data)
        assert set(report["drift"]) <= {"note", "rank", "meta"}
        assert report["drift"]
    assert latest_texts(store) == before  # nothing merged
    assert not store.exists(schema_key(TABLE))
    assert SPEC.schema_policy == "stop"
