"""Change metadata: what a staged or history row says about the change that made it.

Underscore columns, which every reader strips before validating a row (shared/versions.py):
- `_op`: insert, update or delete (a delete row is a tombstone: the key and what is known);
- `_commit_ts`: when the source committed the change (log mode), else the row's
  `last_updated` (polling);
- `_lsn`: the commit position of the change in PostgreSQL's WAL, text form `16/B374D848`
  (log mode only); it orders the versions of one key;
- `_xid`: the source transaction id (log mode only).

One definition for the ingest that writes them, the merge that orders and applies them, and
the readers (`ingestctl history`, the events) that show them.
"""

from __future__ import annotations

from enum import StrEnum

OP_COLUMN = "_op"
COMMIT_TS_COLUMN = "_commit_ts"
LSN_COLUMN = "_lsn"
XID_COLUMN = "_xid"
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
