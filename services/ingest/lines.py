"""The staged text of a change: a row with its change metadata (shared/changes.py), as the
log-mode ingest writes every change and the polling ingest writes the deletes it infers."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from shared.changes import COMMIT_TS_COLUMN, OP_COLUMN, Operation
from shared.rows import row_json
from shared.schema_state import added_value_of
from shared.tables import TableSpec
from shared.types import format_money, format_timestamp


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, Decimal):
        return format_money(value)
    raise TypeError(f"cannot stage a {type(value).__name__}")


def change_line(spec: TableSpec, row: Mapping[str, Any]) -> str:
    """The staged text of one change: the canonical row text (`row_json`) where the change
    holds a whole valid row, else its columns as they came (a tombstone's key or old row, an
    update without its unchanged TOASTed values: the merge validates and fills those; a row
    with columns the model does not name); then the change metadata columns."""
    columns = {k: v for k, v in row.items() if not k.startswith("_")}
    metadata = {k: v for k, v in row.items() if k.startswith("_")}
    text = _row_text(spec, columns, whole=row.get(OP_COLUMN) != Operation.DELETE.value)
    extra = ",".join(
        f"{json.dumps(k)}:{json.dumps(v, default=_encode, ensure_ascii=False)}"
        for k, v in metadata.items()
    )
    return f"{text[:-1]},{extra}}}" if text != "{}" else "{" + extra + "}"


def _row_text(spec: TableSpec, columns: Mapping[str, Any], *, whole: bool) -> str:
    if whole and set(columns) == set(spec.columns):
        try:
            return row_json(spec, spec.row_model.model_validate(columns))
        except ValueError:
            pass  # staged as it came: the merge quarantines it, naming the field
    ordered = {c: columns[c] for c in spec.columns if c in columns}
    # columns the model does not name (the source added them): kept, after the model's, for
    # the merge's schema policy to decide on
    ordered |= {c: added_value_of(v) for c, v in columns.items() if c not in ordered}
    return json.dumps(ordered, default=_encode, ensure_ascii=False, separators=(",", ":"))


def tombstone_line(spec: TableSpec, key: int, at: datetime) -> str:
    """A delete the ingest infers (a key gone from the source) at `at`, the read's clock."""
    return change_line(
        spec, {spec.primary_key: key, OP_COLUMN: Operation.DELETE.value, COMMIT_TS_COLUMN: at}
    )
