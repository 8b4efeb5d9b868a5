"""The one way to read a table's current rows and its history from the bucket.

Everything that reads latest or history outside the merge's own commit logic (ingest's
reconcile, operators' status / history / asof, the transform, the demo, tests) goes through
here, so a change to how latest is stored (e.g. key-range partitions) changes one module.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from shared.history import HistoryRow, load_history
from shared.layout import history_prefix, latest_key
from shared.rows import FileFormatError, load_rows
from shared.schemas import RowModel
from shared.storage import BucketStore
from shared.tables import TableSpec


@dataclass(frozen=True)
class LatestSnapshot:
    """latest's rows (sorted by key) and the ETag they were read at (None: no latest yet)."""

    rows: list[RowModel]
    etag: str | None

    @property
    def exists(self) -> bool:
        return self.etag is not None


def read_latest(store: BucketStore, spec: TableSpec) -> LatestSnapshot:
    key = latest_key(spec.name)
    stored = store.get_if_exists(key)
    if stored is None:
        return LatestSnapshot(rows=[], etag=None)
    report = load_rows(spec, stored.data, f"s3://{store.bucket}/{key}")
    if report.problems:  # latest is ours: a row that fails is a bug or a schema change
        raise FileFormatError(report.source, f"latest rows invalid: {report.problems[0]}")
    return LatestSnapshot(rows=report.rows, etag=stored.etag)


def history_keys(store: BucketStore, spec: TableSpec) -> list[str]:
    """The table's history objects, oldest first (their names start with the batch's stamp)."""
    return sorted(store.keys(history_prefix(spec.name)))


def read_history(store: BucketStore, spec: TableSpec, key: str) -> list[HistoryRow]:
    """The rows of one history object (e.g. the one a HistoryAppended event names)."""
    return load_history(spec, store.get(key).data, f"s3://{store.bucket}/{key}")


def iter_history(store: BucketStore, spec: TableSpec) -> Iterator[tuple[str, list[HistoryRow]]]:
    """Each history object of the table with its rows, oldest first, one object in memory."""
    for key in history_keys(store, spec):
        yield key, read_history(store, spec, key)
