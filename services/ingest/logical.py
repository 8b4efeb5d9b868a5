"""Log-based capture: the changes of the registry tables from a logical replication slot.

PostgreSQL's SQL-level logical decoding, through pg8000 (ordinary SELECTs, no streaming
connection), with the wal2json output plugin in `format-version` 2 (one JSON object per
Begin / Insert / Update / Delete / Truncate / Commit). A run of the ingest:

1. `ensure_slot()` (first run: before the baseline is read, so nothing between is missed);
2. `upto = current_lsn()` (the WAL *flush* position: decoding reads no further, so a window
   bounded by it is decoded whole);
3. `peek(upto, max_changes)` -> a `ChangePage`; stage it; only once S3 holds it,
   `advance(page.end_lsn)`; repeat while `not page.complete`. `consume()` is that loop.

Peeking consumes nothing: a crash before the advance peeks the same changes again. The slot's
position is persisted at checkpoints, so after a PostgreSQL crash changes already advanced past
may be sent again: the merge orders versions by commit LSN and absorbs the repeats.

`upto_nchanges` stops decoding only at a transaction boundary: a page holds whole transactions,
possibly more rows than asked for. Every transaction of the database counts (an unrelated one
as its empty Begin/Commit pair).

Values are converted to what `PostgresSource.read` returns for the same column type (pg8000's
types). An update leaves out the columns whose value is TOASTed (stored out of line) and was
not changed: with REPLICA IDENTITY FULL they are taken from the old row; otherwise they stay
absent from `Change.columns`, are named in `Change.unchanged_toast` (staged as
`_toast_unchanged`), and the merge fills them from latest. wal2json writes a numeric or float
NaN/Infinity as null.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Protocol
from uuid import UUID

import pg8000.native
from pydantic import BaseModel, ConfigDict, Field

from services.ingest.source import SourceCredentials, connect, unavailable
from shared.changes import (
    COMMIT_TS_COLUMN,
    LSN_COLUMN,
    OP_COLUMN,
    XID_COLUMN,
    Operation,
    lsn_value,
)
from shared.tables import TableSpec

PLUGIN = "wal2json"
SLOT_NAME = re.compile(r"^[a-z0-9_]{1,63}$")  # PostgreSQL's rule for slot names

# SQLSTATEs the slot functions raise.
UNDEFINED_OBJECT = "42704"  # no such slot
DUPLICATE_OBJECT = "42710"  # slot exists already
OBJECT_IN_USE = "55006"  # another session holds the slot
NOT_IN_PREREQUISITE_STATE = "55000"  # wal_level, a lost slot, advancing backwards
INSUFFICIENT_PRIVILEGE = "42501"
UNDEFINED_FILE = "58P01"  # the plugin's library is not installed


class LogicalCaptureError(RuntimeError):
    """Log-based capture cannot go on; the message says what the operator must do."""


class SlotMissingError(LogicalCaptureError):
    """The slot does not exist (dropped, or never created)."""


class SlotBusyError(LogicalCaptureError):
    """Another session is reading the slot (a second ingest run at the same time)."""


class SlotLostError(LogicalCaptureError):
    """The WAL the slot needed was removed (`wal_status = 'lost'`): changes were lost."""


class UnsupportedTypeError(ValueError):
    """A column type this reader does not convert."""


# ---------------------------------------------------------------------------------------------
# Models


class Change(BaseModel):
    """One row change, with where and when its transaction committed."""

    model_config = ConfigDict(frozen=True)

    action: Operation
    table_schema: str
    table: str
    # The new row (insert, update); empty for a delete. In an update, a key that is absent is
    # an unchanged TOASTed value the log did not carry (see `unchanged_toast`).
    columns: dict[str, Any] = Field(default_factory=dict)
    # The old key (REPLICA IDENTITY DEFAULT) or the whole old row (FULL), for update/delete.
    identity: dict[str, Any] = Field(default_factory=dict)
    # Columns of the table an update left out and the old row could not supply.
    unchanged_toast: tuple[str, ...] = ()
    lsn: str  # this change's position
    commit_lsn: str  # its transaction's commit record
    xid: int
    commit_ts: datetime


class Transaction(BaseModel):
    """A committed transaction's changes of the watched tables, in the order they were made."""

    model_config = ConfigDict(frozen=True)

    xid: int
    commit_lsn: str
    end_lsn: str  # the end of its commit record: where the next transaction starts
    commit_ts: datetime
    changes: tuple[Change, ...] = ()
    truncated: tuple[str, ...] = ()  # tables it truncated (no row changes are logged for them)

    def by_table(self) -> dict[str, list[Change]]:
        return group_by_table(self.changes)


class ChangePage(BaseModel):
    """Whole transactions in commit order, from the slot's position up to at most `upto_lsn`."""

    model_config = ConfigDict(frozen=True)

    slot: str
    start_lsn: str  # the slot's confirmed position when peeked
    upto_lsn: str  # the window asked for (bounded by the flush position)
    end_lsn: str  # advance here once this page is durable
    complete: bool  # True: nothing more before upto_lsn; False: peek again after advancing
    transactions: tuple[Transaction, ...] = ()

    def changes(self) -> list[Change]:
        return [change for txn in self.transactions for change in txn.changes]

    def by_table(self) -> dict[str, list[Change]]:
        """Each table's changes in commit order (one staging file per table)."""
        return group_by_table(self.changes())

    def truncated(self) -> list[str]:
        return sorted({table for txn in self.transactions for table in txn.truncated})


class SlotHealth(BaseModel):
    """`pg_replication_slots` for one slot, with what it costs the source."""

    model_config = ConfigDict(frozen=True)

    slot: str
    plugin: str | None
    database: str | None
    active: bool
    wal_status: str | None  # reserved, extended, unreserved (at risk), lost
    restart_lsn: str | None  # oldest WAL the slot keeps
    confirmed_flush_lsn: str | None  # where the next peek starts
    current_lsn: str
    lag_bytes: int | None  # WAL written since confirmed_flush_lsn: what is not yet captured
    retained_bytes: int | None  # WAL the slot keeps on the source's disk
    safe_wal_size: int | None  # bytes left before it becomes lost (None: no limit)

    @property
    def lost(self) -> bool:
        return self.wal_status == "lost"

    @property
    def at_risk(self) -> bool:
        """Past max_wal_size (`unreserved`: the next checkpoint may remove its WAL) or lost."""
        return self.wal_status in {"unreserved", "lost"}

    def describe(self) -> str:
        if self.lost:
            return (
                f"replication slot {self.slot} is lost (wal_status=lost): PostgreSQL removed WAL "
                "it had not yet decoded (max_slot_wal_keep_size), so changes are missing. Drop "
                "the slot and re-baseline every log-mode table."
            )
        return (
            f"replication slot {self.slot}: wal_status={self.wal_status}, lag "
            f"{self.lag_bytes} bytes, {self.retained_bytes} bytes of WAL retained"
        )


def group_by_table(changes: Iterable[Change]) -> dict[str, list[Change]]:
    tables: dict[str, list[Change]] = {}
    for change in changes:
        tables.setdefault(change.table, []).append(change)
    return tables


# ---------------------------------------------------------------------------------------------
# wal2json values -> the Python types pg8000 gives for the same columns


def _decimal(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _float(value: Any) -> float:
    return float(value)


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"not a boolean: {value!r}")
    return value


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"not an integer: {value!r}")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"not text: {value!r}")
    return value


def _naive(value: Any) -> datetime:
    parsed = datetime.fromisoformat(_str(value))
    if parsed.tzinfo is not None:
        raise ValueError(f"timestamp without time zone with an offset: {value!r}")
    return parsed


def _aware(value: Any) -> datetime:
    parsed = datetime.fromisoformat(_str(value))
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp with time zone without an offset: {value!r}")
    return parsed


def _date(value: Any) -> date:
    return date.fromisoformat(_str(value))


def _uuid(value: Any) -> UUID:
    return UUID(_str(value))


CONVERTERS: Mapping[str, Callable[[Any], Any]] = {
    "smallint": _int,
    "integer": _int,
    "bigint": _int,
    "oid": _int,
    "numeric": _decimal,
    "real": _float,
    "double precision": _float,
    "boolean": _bool,
    "text": _str,
    "character varying": _str,
    "character": _str,
    "name": _str,
    '"char"': _str,
    "timestamp without time zone": _naive,
    "timestamp with time zone": _aware,
    "date": _date,
    "uuid": _uuid,
}
_TYPMOD = re.compile(r"\([^)]*\)")


def type_name(declared: str) -> str:
    """`character varying(3)` / `timestamp(3) without time zone` without the modifier."""
    return " ".join(_TYPMOD.sub("", declared).split())


def convert(table: str, column: str, declared: str, value: Any) -> Any:
    """A wal2json value as pg8000 would return it for a column of type `declared`."""
    if value is None:
        return None
    converter = CONVERTERS.get(type_name(declared))
    if converter is None:
        raise UnsupportedTypeError(f"{table}.{column}: type {declared!r} is not supported")
    try:
        return converter(value)
    except (TypeError, ValueError, ArithmeticError) as exc:
        raise UnsupportedTypeError(f"{table}.{column} ({declared}): {value!r}: {exc}") from None


def _values(table: str, items: Sequence[Mapping[str, Any]], known: Sequence[str]) -> dict[str, Any]:
    """A change's columns as pg8000 would give them. A column the registry does not name (the
    source added it) and of a type with no converter keeps wal2json's value (its text, or a
    JSON number or boolean): the merge's schema policy decides on it."""
    values = {}
    for item in items:
        name, declared, value = item["name"], item["type"], item.get("value")
        if name not in known and type_name(declared) not in CONVERTERS:
            values[name] = value
        else:
            values[name] = convert(table, name, declared, value)
    return values


# ---------------------------------------------------------------------------------------------
# wal2json rows -> transactions

PeekRow = tuple[str, int, str]  # (lsn, xid, data) as pg8000 returns them
ACTIONS = {"I": Operation.INSERT, "U": Operation.UPDATE, "D": Operation.DELETE}


def decode(data: str) -> dict[str, Any]:
    """One wal2json message; numbers as Decimal so a numeric keeps its digits and scale."""
    message: dict[str, Any] = json.loads(data, parse_float=Decimal)
    return message


def _change(message: Mapping[str, Any], commit: Mapping[str, Any], known: Sequence[str]) -> Change:
    table = message["table"]
    action = ACTIONS[message["action"]]
    columns = _values(table, message.get("columns", ()), known)
    identity = _values(table, message.get("identity", ()), known)
    unchanged: tuple[str, ...] = ()
    if action is Operation.UPDATE:
        # Unchanged TOASTed values: the old row has them under REPLICA IDENTITY FULL.
        columns |= {k: v for k, v in identity.items() if k not in columns}
        unchanged = tuple(c for c in known if c not in columns)
    return Change(
        action=action,
        table_schema=message["schema"],
        table=table,
        columns=columns,
        identity=identity,
        unchanged_toast=unchanged,
        lsn=message["lsn"],
        commit_lsn=commit["lsn"],
        xid=commit["xid"],
        commit_ts=_aware(commit["timestamp"]),
    )


def _transaction(
    messages: Sequence[Mapping[str, Any]],
    commit: Mapping[str, Any],
    end_lsn: str,
    known: Mapping[str, Sequence[str]],
) -> Transaction:
    changes = tuple(
        _change(m, commit, known.get(m["table"], ())) for m in messages if m["action"] in ACTIONS
    )
    return Transaction(
        xid=commit["xid"],
        commit_lsn=commit["lsn"],
        end_lsn=end_lsn,
        commit_ts=_aware(commit["timestamp"]),
        changes=changes,
        truncated=tuple(m["table"] for m in messages if m["action"] == "T"),
    )


def parse_transactions(
    rows: Iterable[PeekRow], known: Mapping[str, Sequence[str]] | None = None
) -> list[Transaction]:
    """wal2json v2 rows (Begin, changes, Commit, ...) as transactions in commit order.

    `known` names each table's columns, to tell which an update left out (unchanged TOAST).
    The `lsn` of a Commit row is the end of its commit record: a slot advanced there has
    consumed that transaction and nothing after it.
    """
    transactions: list[Transaction] = []
    pending: list[dict[str, Any]] | None = None
    for lsn, _xid, data in rows:
        message = decode(data)
        action = message["action"]
        if action == "B":
            pending = []
        elif action == "C":
            if pending is None:
                raise ValueError(f"a Commit at {lsn} without its Begin")
            transactions.append(_transaction(pending, message, lsn, known or {}))
            pending = None
        elif pending is not None:
            pending.append(message)
        elif action != "M":  # a non-transactional logical message has no Begin
            raise ValueError(f"a {action!r} message at {lsn} outside a transaction")
    if pending is not None:
        raise ValueError("the changes end inside a transaction")
    return transactions


# ---------------------------------------------------------------------------------------------
# Staging rows


# The staged list of the columns an update left out (unchanged TOAST); the merge's name for it.
TOAST_UNCHANGED_COLUMN = "_toast_unchanged"


def staging_row(change: Change) -> dict[str, Any]:
    """The row a change stages: its columns (a delete: the old key, or the old row under
    REPLICA IDENTITY FULL) plus the change metadata (shared/changes.py). `_lsn` is the commit
    position: changes of one transaction share it and keep their order in the file.
    `_commit_ts` is naive UTC, as the rows' own timestamps. The columns in
    `change.unchanged_toast` are absent and listed in `_toast_unchanged`: the merge fills
    them from the key's previous version (latest)."""
    values = change.identity if change.action is Operation.DELETE else change.columns
    row = {
        **values,
        OP_COLUMN: change.action.value,
        COMMIT_TS_COLUMN: change.commit_ts.astimezone(UTC).replace(tzinfo=None),
        LSN_COLUMN: change.commit_lsn,
        XID_COLUMN: change.xid,
    }
    if change.unchanged_toast:
        row[TOAST_UNCHANGED_COLUMN] = list(change.unchanged_toast)
    return row


def staging_rows(changes: Iterable[Change]) -> list[dict[str, Any]]:
    return [staging_row(change) for change in changes]


# ---------------------------------------------------------------------------------------------
# The port and its PostgreSQL adapter


class ChangeReader(Protocol):
    """What the ingest needs from the log: a slot, a window, pages of it, an advance."""

    def ensure_slot(self) -> bool: ...
    def current_lsn(self) -> str: ...
    def peek(self, upto_lsn: str, max_changes: int) -> ChangePage: ...
    def advance(self, lsn: str) -> str: ...
    def health(self) -> SlotHealth: ...


def consume(
    reader: ChangeReader,
    upto_lsn: str,
    max_changes: int,
    handle: Callable[[ChangePage], None],
) -> list[ChangePage]:
    """Every page up to `upto_lsn`: `handle` makes each durable, then the slot advances past
    it. An exception in `handle` leaves the slot where it was, so the page is peeked again."""
    pages: list[ChangePage] = []
    while True:
        page = reader.peek(upto_lsn, max_changes)
        handle(page)
        reader.advance(page.end_lsn)
        pages.append(page)
        if page.complete:
            return pages


def _lsn_min(a: str, b: str) -> str:
    return a if lsn_value(a) <= lsn_value(b) else b


def _sqlstate(exc: Exception) -> str:
    details = exc.args[0] if exc.args else None
    return str(details.get("C", "")) if isinstance(details, dict) else ""


def _message(exc: Exception) -> str:
    details = exc.args[0] if exc.args else None
    return str(details.get("M", exc)) if isinstance(details, dict) else str(exc)


PEEK_SQL = (
    "SELECT lsn::text, xid::text::bigint, data FROM pg_logical_slot_peek_changes("
    ":slot, :upto::pg_lsn, :n::integer, 'format-version', '2', 'include-xids', '1', "
    "'include-timestamp', '1', 'include-lsn', '1', 'include-typmod', '0', 'add-tables', :tables)"
)
HEALTH_SQL = (
    "SELECT slot_name::text, plugin::text, database::text, active, wal_status, "
    "restart_lsn::text, confirmed_flush_lsn::text, pg_current_wal_lsn()::text, "
    "pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, "
    "pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint, safe_wal_size "
    "FROM pg_replication_slots WHERE slot_name = :slot"
)
SESSION_SQL = ("SET DateStyle = ISO", "SET TimeZone = 'UTC'", "SET IntervalStyle = postgres")


class LogicalReader:
    """The registry tables' changes from slot `slot` (wal2json), through pg8000; connects on
    first use. Needs `wal_level=logical` and the REPLICATION attribute (`rds_replication`)."""

    def __init__(
        self,
        credentials: Callable[[], SourceCredentials],
        slot: str,
        tables: Sequence[TableSpec],
        schema: str = "public",
    ) -> None:
        if not SLOT_NAME.match(slot):
            raise ValueError(f"slot name {slot!r}: use 1-63 of a-z, 0-9 and _")
        if not tables:
            raise ValueError("no tables to capture")
        self._credentials = credentials
        self.slot = slot
        self.schema = schema
        self.known = {spec.name: spec.columns for spec in tables}
        self.add_tables = ",".join(f"{_escape(schema)}.{_escape(s.name)}" for s in tables)
        self._conn: pg8000.native.Connection | None = None

    def _connection(self) -> pg8000.native.Connection:
        if self._conn is None:
            credentials = self._credentials()
            try:
                conn = connect(credentials)
            except (OSError, pg8000.native.InterfaceError, pg8000.native.DatabaseError) as exc:
                raise unavailable(credentials, exc) from exc
            try:
                for statement in SESSION_SQL:  # how values are written: what the parser reads
                    conn.run(statement)
            except BaseException:
                with contextlib.suppress(OSError, pg8000.native.InterfaceError):
                    conn.close()
                raise
            self._conn = conn
        return self._conn

    def _run(self, sql: str, **params: Any) -> list[list[Any]]:
        try:
            rows: list[list[Any]] = self._connection().run(sql, **params)
        except pg8000.native.DatabaseError as exc:
            translated = self._translate(exc)
            if translated is exc:
                raise
            raise translated from exc
        except pg8000.native.InterfaceError:
            self.close()  # broken: the next call connects afresh
            raise
        return rows

    def _translate(self, exc: Exception) -> Exception:
        state, message = _sqlstate(exc), _message(exc)
        if state == UNDEFINED_OBJECT and "replication slot" in message:
            return SlotMissingError(f"{message}: the first log-mode run creates it")
        if state == OBJECT_IN_USE:
            return SlotBusyError(f"{message}: another ingest run is reading the slot")
        if state == UNDEFINED_FILE:
            return LogicalCaptureError(f"{message}: the {PLUGIN} plugin is not installed")
        if state == INSUFFICIENT_PRIVILEGE:
            return LogicalCaptureError(
                f"{message}: the user needs the REPLICATION attribute (on RDS: rds_replication)"
            )
        if state == NOT_IN_PREREQUISITE_STATE and "wal_level" in message:
            return LogicalCaptureError(
                f"{message}: set wal_level=logical (on RDS: rds.logical_replication=1, reboot)"
            )
        return exc

    def ensure_slot(self) -> bool:
        """Create the slot if it is missing; True if it was created now. Creating waits for
        the transactions running at that moment to end."""
        existing = self._run(
            "SELECT plugin::text, database::text = current_database() FROM pg_replication_slots "
            "WHERE slot_name = :slot",
            slot=self.slot,
        )
        if existing:
            self._check_slot(*existing[0])
            return False
        try:
            self._run(
                "SELECT pg_create_logical_replication_slot(:slot, :plugin)",
                slot=self.slot,
                plugin=PLUGIN,
            )
        except pg8000.native.DatabaseError as exc:
            if _sqlstate(exc) == DUPLICATE_OBJECT:  # created meanwhile by another run
                return False
            raise
        return True

    def _check_slot(self, plugin: str | None, here: bool | None) -> None:
        if plugin != PLUGIN or not here:
            raise LogicalCaptureError(
                f"replication slot {self.slot} exists but is not a {PLUGIN} slot of this "
                f"database (plugin {plugin}); choose another slot name"
            )

    def current_lsn(self) -> str:
        """Where a window may end: the WAL flush position (peek decodes no further;
        `pg_current_wal_lsn()` is the write position, which may be ahead of it)."""
        ((lsn,),) = self._run("SELECT pg_current_wal_flush_lsn()::text")
        return str(lsn)

    def peek(self, upto_lsn: str, max_changes: int) -> ChangePage:
        """The next page of whole transactions committed before `upto_lsn`, not consumed."""
        if max_changes < 1:
            raise ValueError("max_changes must be at least 1")
        health = self.health()
        if health.lost:
            raise SlotLostError(health.describe())
        upto = _lsn_min(upto_lsn, self.current_lsn())
        rows = self._run(PEEK_SQL, slot=self.slot, upto=upto, n=max_changes, tables=self.add_tables)
        transactions = parse_transactions(((r[0], r[1], r[2]) for r in rows), self.known)
        complete = len(rows) < max_changes or not transactions
        return ChangePage(
            slot=self.slot,
            start_lsn=health.confirmed_flush_lsn or upto,
            upto_lsn=upto,
            end_lsn=upto if complete else transactions[-1].end_lsn,
            complete=complete,
            transactions=tuple(transactions),
        )

    def advance(self, lsn: str) -> str:
        """Move the slot's confirmed position to `lsn`; a slot already there or past counts as
        done. Returns the slot's position."""
        position = self.health().confirmed_flush_lsn
        if position is not None and lsn_value(position) >= lsn_value(lsn):
            return position
        try:
            ((result,),) = self._run(
                "SELECT end_lsn::text FROM pg_replication_slot_advance(:slot, :lsn::pg_lsn)",
                slot=self.slot,
                lsn=lsn,
            )
        except pg8000.native.DatabaseError as exc:
            # "cannot advance replication slot to X, minimum is Y": moved past meanwhile.
            after = self.health().confirmed_flush_lsn
            if after is not None and lsn_value(after) >= lsn_value(lsn):
                return after
            raise LogicalCaptureError(f"advancing {self.slot} to {lsn}: {_message(exc)}") from exc
        return str(result)

    def health(self) -> SlotHealth:
        rows = self._run(HEALTH_SQL, slot=self.slot)
        if not rows:
            raise SlotMissingError(f"replication slot {self.slot} does not exist")
        (name, plugin, database, active, status, restart, confirmed, current, lag, kept, safe) = (
            rows[0]
        )
        return SlotHealth(
            slot=name,
            plugin=plugin,
            database=database,
            active=active,
            wal_status=status,
            restart_lsn=restart,
            confirmed_flush_lsn=confirmed,
            current_lsn=current,
            lag_bytes=lag,
            retained_bytes=kept,
            safe_wal_size=safe,
        )

    def drop_slot(self) -> None:
        """Remove the slot (the source then keeps no WAL for us; log capture starts over)."""
        self._run("SELECT pg_drop_replication_slot(:slot)", slot=self.slot)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(OSError, pg8000.native.InterfaceError):
                conn.close()

    def __enter__(self) -> LogicalReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _escape(name: str) -> str:
    """A name in wal2json's add-tables list: space, quote, `,`, `.` and `*` are backslashed."""
    return re.sub(r"([ ',.*\\])", r"\\\1", name)
