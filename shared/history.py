"""History objects: the row versions one merge superseded, with audit columns.

Each history row is the superseded row unchanged plus `_superseded_at` (when the replacing
version was made: its commit time in log mode, else its `last_updated`), `_batch` (the batch
that superseded it), `_deleted_at` (only when a delete ended the version: the delete's commit
time), the change that made the version itself (`_op`, `_commit_ts`, `_lsn`, `_xid`:
shared/changes.py) and `_observed` (when the version itself was observed). Objects written
before these columns were kept lack them (`change`, `observed` None). A
history object is copied from the commit log entry that names it (shared/commitlog.py), so
only committed history is ever listed. Written by the merge, read by the merge, operators
(`history`, `asof`, `status`) and the transform.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.changes import CHANGE_COLUMNS, DELETED_AT_COLUMN, Change, naive_utc
from shared.observation import OBSERVED_COLUMN, Observation
from shared.rows import FileFormatError, decode_rows, dump_lines, row_json
from shared.schemas import RowModel
from shared.tables import TableSpec
from shared.types import format_timestamp, parse_timestamp
from shared.versions import BATCH_COLUMN, audit_text, observed_of, validate_stripped

SUPERSEDED_AT = "_superseded_at"
BATCH = BATCH_COLUMN
DELETED_AT = DELETED_AT_COLUMN
AUDIT_COLUMNS = (SUPERSEDED_AT, BATCH, DELETED_AT, *CHANGE_COLUMNS, OBSERVED_COLUMN)


@dataclass(frozen=True)
class HistoryRow:
    """A superseded row version, unchanged, and which batch superseded it, as of when."""

    row: RowModel
    superseded_at: datetime
    batch: str
    observed: Observation | None = None
    change: Change | None = None  # the change that made this version
    deleted_at: datetime | None = None  # a delete ended it (when it committed)

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None


def history_row_json(spec: TableSpec, item: HistoryRow) -> str:
    """The canonical row text with the audit columns appended."""
    audit: dict[str, Any] = {
        SUPERSEDED_AT: format_timestamp(item.superseded_at),
        BATCH: item.batch,
    }
    if item.deleted_at is not None:
        audit[DELETED_AT] = format_timestamp(item.deleted_at)
    if item.change is not None:
        audit.update(item.change.columns())
    if item.observed is not None:
        audit[OBSERVED_COLUMN] = item.observed.text
    return row_json(spec, item.row)[:-1] + "," + audit_text(audit) + "}"


def dump_history(spec: TableSpec, items: Iterable[HistoryRow]) -> bytes:
    """A history object: a JSON array, one row per line, like every file of rows."""
    return dump_lines([history_row_json(spec, item) for item in items])


def load_history(spec: TableSpec, data: bytes, source: str) -> list[HistoryRow]:
    """Read a history object back; it is ours, so any problem is an error, not a rejection."""
    raw_rows = decode_rows(data, source)
    if not all(isinstance(raw, dict) for raw in raw_rows):
        raise FileFormatError(source, "history row is not an object")
    report, audits = validate_stripped(spec, raw_rows, source)
    if report.problems:
        raise FileFormatError(source, f"history rows invalid: {report.problems[0]}")
    return [_history_row(row, audit) for row, audit in zip(report.rows, audits, strict=True)]


def _history_row(row: RowModel, audit: dict[str, Any]) -> HistoryRow:
    deleted = audit.get(DELETED_AT)
    return HistoryRow(
        row,
        parse_timestamp(audit.get(SUPERSEDED_AT)),
        str(audit.get(BATCH)),
        observed_of(audit),
        Change.of_audit(audit),
        naive_utc(parse_timestamp(deleted)) if isinstance(deleted, str) else None,
    )
