"""History objects: the row versions one merge superseded, with audit columns.

Each history row is the superseded row unchanged plus `_superseded_at` (the replacing
version's `last_updated`), `_batch` (the batch that superseded it) and `_observed` (when the
version itself was observed; absent in objects written before observations were kept). A
history object is copied from the commit log entry that names it (shared/commitlog.py), so
only committed history is ever listed. Written by the merge, read by the merge, operators
(`history`, `asof`, `status`) and the transform.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from shared.observation import OBSERVED_COLUMN, Observation
from shared.rows import FileFormatError, decode_rows, dump_lines, row_json
from shared.schemas import RowModel
from shared.tables import TableSpec
from shared.types import format_timestamp, parse_timestamp
from shared.versions import observed_of, validate_stripped

SUPERSEDED_AT = "_superseded_at"
BATCH = "_batch"
AUDIT_COLUMNS = (SUPERSEDED_AT, BATCH)


@dataclass(frozen=True)
class HistoryRow:
    """A superseded row version, unchanged, and which batch superseded it, as of when."""

    row: RowModel
    superseded_at: datetime
    batch: str
    observed: Observation | None = None


def history_row_json(spec: TableSpec, item: HistoryRow) -> str:
    """The canonical row text with the audit columns appended."""
    audit = f"{json.dumps(SUPERSEDED_AT)}:{json.dumps(format_timestamp(item.superseded_at))}"
    audit += f",{json.dumps(BATCH)}:{json.dumps(item.batch)}"
    if item.observed is not None:
        audit += f",{json.dumps(OBSERVED_COLUMN)}:{json.dumps(item.observed.text)}"
    return row_json(spec, item.row)[:-1] + "," + audit + "}"


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
    return [
        HistoryRow(
            row,
            parse_timestamp(audit.get(SUPERSEDED_AT)),
            str(audit.get(BATCH)),
            observed_of(audit),
        )
        for row, audit in zip(report.rows, audits, strict=True)
    ]
