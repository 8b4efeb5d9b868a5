"""`history` and `asof`: shared.timeline over latest (shared.reader) and history (its index)."""

from __future__ import annotations

from datetime import datetime

from shared.history_frames import history_at
from shared.history_lookup import open_view
from shared.reader import latest_seq, read_latest_versions
from shared.rows import dump_rows, validate_rows
from shared.storage import BucketStore
from shared.tables import TableSpec
from shared.timeline import RowVersion, Seen, key_timelines, seen_timelines, stored_rows, table_at
from shared.versions import version_json


def row_history(store: BucketStore, spec: TableSpec, key: int) -> list[RowVersion]:
    """Every version of one row, oldest first; empty when the key was never seen."""
    return key_timelines(store, spec, {key}).get(key, [])


def table_as_of(store: BucketStore, spec: TableSpec, at: datetime) -> bytes:
    """The table as it stood at `at`, as a canonical file of rows (sorted by key). History
    through the index by time: per key, the rows around `at` (shared/history_frames.py)."""
    view = open_view(store, spec, latest_seq(store, spec))
    texts = [version_json(spec, v) for v in read_latest_versions(store, spec)]
    latest = [Seen.of(row) for row in stored_rows(texts)]
    starts = {seen.row[spec.primary_key]: seen.start for seen in latest}
    chosen = history_at(view, at, starts)
    history = stored_rows([line.text for line in view.lines()] if chosen is None else chosen)
    versions = seen_timelines(latest, map(Seen.of, history), spec.primary_key)
    rows = table_at(versions, at)
    report = validate_rows(spec, list(rows), f"asof:{spec.name}@{at.isoformat()}")
    if report.problems:  # rows we wrote ourselves: failing here is a bug
        raise ValueError(str(report.problems[0]))
    return dump_rows(spec, report.rows)
