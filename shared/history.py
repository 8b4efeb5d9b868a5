"""History objects: the row versions one merge superseded, with audit columns.

Each history row is the superseded row unchanged plus `_superseded_at` (the replacing
version's `last_updated`) and `_batch` (the batch that superseded it). Written by the merge,
read by the merge, operators (`history`, `asof`, `status`) and the transform.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.rows import FileFormatError, decode_rows, row_json, validate_rows
from shared.schemas import RowModel
from shared.tables import TableSpec
from shared.types import format_timestamp, parse_timestamp

SUPERSEDED_AT = "_superseded_at"
BATCH = "_batch"
AUDIT_COLUMNS = (SUPERSEDED_AT, BATCH)


@dataclass(frozen=True)
class HistoryRow:
    """A superseded row version, unchanged, and which batch superseded it, as of when."""

    row: RowModel
    superseded_at: datetime
    batch: str


def history_row_json(spec: TableSpec, item: HistoryRow) -> str:
    """The canonical row text with the audit columns appended."""
    audit = f"{json.dumps(SUPERSEDED_AT)}:{json.dumps(format_timestamp(item.superseded_at))}"
    audit += f",{json.dumps(BATCH)}:{json.dumps(item.batch)}"
    return row_json(spec, item.row)[:-1] + "," + audit + "}"


def dump_history(spec: TableSpec, items: Iterable[HistoryRow]) -> bytes:
    """A history object: a JSON array, one row per line, like every file of rows."""
    lines = [history_row_json(spec, item) for item in items]
    if not lines:
        return b"[]\n"
    return ("[\n" + ",\n".join(lines) + "\n]\n").encode("utf-8")


def load_history(spec: TableSpec, data: bytes, source: str) -> list[HistoryRow]:
    """Read a history object back; it is ours, so any problem is an error, not a rejection."""
    raw_rows = decode_rows(data, source)
    audits: list[tuple[Any, Any]] = []
    plain: list[Any] = []
    for raw in raw_rows:
        if not isinstance(raw, dict):
            raise FileFormatError(source, "history row is not an object")
        row = dict(raw)
        audits.append((row.pop(SUPERSEDED_AT, None), row.pop(BATCH, None)))
        plain.append(row)
    report = validate_rows(spec, plain, source)
    if report.problems:
        raise FileFormatError(source, f"history rows invalid: {report.problems[0]}")
    return [
        HistoryRow(row, parse_timestamp(superseded_at), str(batch))
        for row, (superseded_at, batch) in zip(report.rows, audits, strict=True)
    ]
