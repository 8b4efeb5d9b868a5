"""`history` and `asof`: shared.timeline over latest (shared.reader) and history (its index)."""

from __future__ import annotations

from datetime import datetime

from shared.rows import dump_rows, validate_rows
from shared.storage import BucketStore
from shared.tables import TableSpec
from shared.timeline import RowVersion, as_of, key_timelines, stored_versions


def row_history(store: BucketStore, spec: TableSpec, key: int) -> list[RowVersion]:
    """Every version of one row, oldest first; empty when the key was never seen."""
    return key_timelines(store, spec, {key}).get(key, [])


def table_as_of(store: BucketStore, spec: TableSpec, at: datetime) -> bytes:
    """The table as it stood at `at`, as a canonical file of rows (sorted by key)."""
    latest, history = stored_versions(store, spec)
    rows = as_of(latest, history, spec.primary_key, at)
    report = validate_rows(spec, list(rows), f"asof:{spec.name}@{at.isoformat()}")
    if report.problems:  # rows we wrote ourselves: failing here is a bug
        raise ValueError(str(report.problems[0]))
    return dump_rows(spec, report.rows)
