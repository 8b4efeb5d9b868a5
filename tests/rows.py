"""Row factories the tests share: one staff row of a given version."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from shared.changes import (
    COMMIT_TS_COLUMN,
    LSN_COLUMN,
    OP_COLUMN,
    TOAST_UNCHANGED_COLUMN,
    XID_COLUMN,
    lsn_text,
)
from shared.rows import row_json
from shared.schemas import Staff
from shared.tables import TABLES

T0 = datetime(2024, 11, 14, 9, 0, 0)


def staff(
    key: int,
    minutes: float = 0,
    name: str = "Jeremie",
    *,
    days: float = 0,
    created: datetime = T0,
) -> Staff:
    """Staff `key` as last updated `minutes` (and `days`) after T0."""
    return Staff(
        staff_id=key,
        first_name=name,
        last_name="Franey",
        department_id=2,
        email_address=f"s{key}@terrifictotes.com",
        created_at=created,
        last_updated=T0 + timedelta(days=days, minutes=minutes),
    )


# ---- log-mode staging rows, as the log-capture ingest writes them ---------------------------

LSN_BASE = 0x16_B374_0000


def logged(
    row: Staff | int,
    op: str,
    minutes: float,
    lsn: int,
    *,
    xid: int = 700,
    toast: tuple[str, ...] = (),
) -> dict[str, Any]:
    """One change of the log: the row (a delete: its key alone, or the whole old row) plus
    `_op`, `_commit_ts` (T0 + `minutes`, naive UTC), `_lsn` (the commit's, `16/B374....`),
    `_xid`; `toast`: the columns an update leaves out (unchanged TOAST values)."""
    spec = TABLES["staff"]
    raw: dict[str, Any] = (
        {"staff_id": row} if isinstance(row, int) else json.loads(row_json(spec, row))
    )
    for name in toast:
        raw.pop(name)
    raw |= {
        OP_COLUMN: op,
        COMMIT_TS_COLUMN: (T0 + timedelta(minutes=minutes)).isoformat(timespec="microseconds"),
        LSN_COLUMN: lsn_text(LSN_BASE + lsn),
        XID_COLUMN: xid,
    }
    if toast:
        raw[TOAST_UNCHANGED_COLUMN] = list(toast)
    return raw


def log_file(changes: list[dict[str, Any]]) -> bytes:
    """A log-mode staging file: the changes in commit order, a JSON array."""
    return ("[\n" + ",\n".join(json.dumps(c) for c in changes) + "\n]\n").encode()
