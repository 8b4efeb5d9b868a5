"""Change metadata: what a staged or history row says about the change that made it.

Underscore columns, which every reader strips before validating a row (shared/versions.py):
- `_op`: insert, update or delete (a delete row is a tombstone: the key and what is known);
- `_commit_ts`: when the source committed the change (log mode), else the row's
  `last_updated` (polling);
- `_lsn`: the commit position of the change in PostgreSQL's WAL, text form `16/B374D848`
  (log mode only); it orders the versions of one key;
- `_xid`: the source transaction id (log mode only);
- `_toast_unchanged` (staging only, log mode): the columns an update row leaves out because
  their (TOASTed) values did not change; the merge fills them from the key's previous version.

A staged row is a log row when it carries `_lsn`: then `_op` and `_commit_ts` are required and
its version is ordered by its commit position (docs/merge_protocol.md, "Version order"). latest
and history rows carry the `Change` of the version they hold; a history row whose version was
deleted also carries `_deleted_at` (shared/history.py).

One definition for the ingest that writes them, the merge that orders and applies them, and
the readers (`ingestctl history`, the events) that show them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

OP_COLUMN = "_op"
COMMIT_TS_COLUMN = "_commit_ts"
LSN_COLUMN = "_lsn"
XID_COLUMN = "_xid"
TOAST_UNCHANGED_COLUMN = "_toast_unchanged"
# On a history row whose version a delete ended, and on latest's tombstone line of a deleted
# key: when the delete committed (naive UTC).
DELETED_AT_COLUMN = "_deleted_at"
CHANGE_COLUMNS = (OP_COLUMN, COMMIT_TS_COLUMN, LSN_COLUMN, XID_COLUMN)


class Operation(StrEnum):
    INSERT = "insert"
    UPDATE = "update"
    DELETE = "delete"


def lsn_value(text: str) -> int:
    """`16/B374D848` as the 64-bit position it names (comparable, unlike the text)."""
    high, sep, low = text.partition("/")
    if not sep or not high or not low:
        raise ValueError(f"not an LSN: {text!r}")
    return (int(high, 16) << 32) | int(low, 16)


def lsn_text(value: int) -> str:
    """The position in PostgreSQL's own text form."""
    if not 0 <= value < 1 << 64:
        raise ValueError(f"not an LSN: {value}")
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def naive_utc(value: datetime) -> datetime:
    """A time as the rows keep theirs: naive, in UTC."""
    return value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class Change:
    """What made one row version: its operation, commit time and (log mode) position."""

    op: Operation
    commit_ts: datetime  # naive UTC: the commit (log mode), else the row's last_updated
    lsn: str | None = None
    xid: int | None = None

    def columns(self) -> dict[str, Any]:
        """The audit columns, in their stored order (JSON values)."""
        out: dict[str, Any] = {
            OP_COLUMN: self.op.value,
            COMMIT_TS_COLUMN: self.commit_ts.isoformat(timespec="microseconds"),
        }
        if self.lsn is not None:
            out[LSN_COLUMN] = self.lsn
        if self.xid is not None:
            out[XID_COLUMN] = self.xid
        return out

    @classmethod
    def of_audit(cls, audit: dict[str, Any]) -> Change | None:
        """The change a stored row's audit columns name (None: written before they were)."""
        op, at = audit.get(OP_COLUMN), audit.get(COMMIT_TS_COLUMN)
        if not isinstance(op, str) or not isinstance(at, str):
            return None
        lsn, xid = audit.get(LSN_COLUMN), audit.get(XID_COLUMN)
        return cls(
            Operation(op),
            naive_utc(datetime.fromisoformat(at)),
            lsn if isinstance(lsn, str) else None,
            xid if isinstance(xid, int) else None,
        )
