"""`history` and `asof`: ops.timeline (pure) over latest (shared.reader) and history (its index)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ops.timeline import RowVersion, as_of, timelines
from shared.history_lookup import committed_texts
from shared.reader import latest_versions_of, read_latest_versions
from shared.rows import decode_rows, dump_lines, dump_rows, validate_rows
from shared.storage import BucketStore
from shared.tables import TableSpec
from shared.versions import version_json


def table_versions(
    store: BucketStore, spec: TableSpec, keys: set[int] | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """latest's rows and every history row (of `keys`; None: all) as they are stored:
    canonical dicts with their audit columns (`_observed`, which orders them; ops.timeline
    sets the others aside). History comes from its index (shared/history_lookup.py)."""
    versions = (
        read_latest_versions(store, spec) if keys is None else latest_versions_of(store, spec, keys)
    )
    latest = _stored([version_json(spec, v) for v in versions])
    history = _stored(committed_texts(store, spec, keys))
    return latest, history


def _stored(texts: list[str]) -> list[dict[str, Any]]:
    """Row texts as dicts, numbers read as the row writer wrote them (money stays Decimal)."""
    return [dict(raw) for raw in decode_rows(dump_lines(texts), "stored rows")]


def row_history(store: BucketStore, spec: TableSpec, key: int) -> list[RowVersion]:
    """Every version of one row, oldest first; empty when the key was never seen."""
    latest, history = table_versions(store, spec, {key})
    return timelines(latest, history, spec.primary_key).get(key, [])


def table_as_of(store: BucketStore, spec: TableSpec, at: datetime) -> bytes:
    """The table as it stood at `at`, as a canonical file of rows (sorted by key)."""
    latest, history = table_versions(store, spec)
    rows = as_of(latest, history, spec.primary_key, at)
    report = validate_rows(spec, list(rows), f"asof:{spec.name}@{at.isoformat()}")
    if report.problems:  # rows we wrote ourselves: failing here is a bug
        raise ValueError(str(report.problems[0]))
    return dump_rows(spec, report.rows)
