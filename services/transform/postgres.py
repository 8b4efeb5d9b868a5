"""The PostgreSQL warehouse: the same rows as the Parquet files, in the order they committed.

The sink is sent whole files: a warehouse file's rows as one version of it committed, with
that version's generation (services/transform/files.py). In one transaction it locks the
file's row of `warehouse_generation`, and only if the version is newer than the one applied
copies the rows into a temporary table (COPY, one round trip), upserts them
(`INSERT ... ON CONFLICT (key) DO UPDATE`), deletes the rows of the file's scope (a fact's
month, a dimension's whole table) the version lacks, and records the generation. So two
transforms at once, a replay, a crash and retry or a rebuild beside the live transform leave
each file's newest version, whatever order their writes arrive in. A dropped connection is
reopened and the write retried once. Tables are created on first use from the same column
declarations as the Parquet schema.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Callable, Sequence
from datetime import date, time
from decimal import Decimal
from typing import Any

import pg8000.exceptions
import pg8000.native

from services.ingest.source import SourceCredentials, connect
from services.transform.service import FileVersion
from services.transform.warehouse import WAREHOUSE_TABLES, Kind, Row, WarehouseTable

ident = pg8000.native.identifier

SQL_TYPES: dict[Kind, str] = {
    Kind.INT: "integer",
    Kind.RECORD_ID: "bigint",
    Kind.TEXT: "varchar",
    Kind.DATE: "date",
    Kind.TIME: "time",
    Kind.MONEY: "numeric(12, 2)",
    Kind.BOOL: "boolean",
    Kind.BIGINT: "bigint",
    Kind.TIMESTAMP: "timestamp",
}


def table_ddl(table: WarehouseTable) -> str:
    columns = []
    for column in table.columns:
        null = "" if column.nullable else " NOT NULL"
        key = " PRIMARY KEY" if column.name == table.key else ""
        columns.append(f"{ident(column.name)} {SQL_TYPES[column.kind]}{null}{key}")
    return f"CREATE TABLE IF NOT EXISTS {ident(table.name)} (\n  " + ",\n  ".join(columns) + "\n)"


def added_columns_ddl(table: WarehouseTable) -> str:
    """Nullable columns added since a table was created (e.g. a dimension's deleted stamps)."""
    added = [
        f"ADD COLUMN IF NOT EXISTS {ident(c.name)} {SQL_TYPES[c.kind]}"
        for c in table.columns
        if c.nullable
    ]
    return f"ALTER TABLE {ident(table.name)} " + ", ".join(added) if added else "SELECT 1"


def _copy_text(value: Any) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, date | time | Decimal | int):
        return str(value)
    text = str(value)
    for char, escaped in (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r")):
        text = text.replace(char, escaped)
    return text


GENERATIONS_DDL = (
    "CREATE TABLE IF NOT EXISTS warehouse_generation (file_key varchar PRIMARY KEY, "
    "generation bigint NOT NULL, removed boolean NOT NULL)"
)
_MONTH = re.compile(r"created_month=(\d{4})-(\d{2})/")


def file_scope(key: str) -> tuple[str, dict[str, Any]]:
    """The rows of the table a file holds, as SQL on `t`: a fact's month, or every row."""
    month = _MONTH.search(key)
    if month is None:
        return "TRUE", {}
    year, number = int(month.group(1)), int(month.group(2))
    first = date(year, number, 1)
    following = date(year + number // 12, number % 12 + 1, 1)
    return "t.created_date >= :first AND t.created_date < :following", {
        "first": first,
        "following": following,
    }


def _dropped(exc: Exception) -> bool:
    """A connection the server or the network ended (terminated backend, closed socket)."""
    if isinstance(exc, pg8000.exceptions.InterfaceError):
        return True
    if isinstance(exc, pg8000.exceptions.DatabaseError) and exc.args:
        detail = exc.args[0]
        return isinstance(detail, dict) and str(detail.get("C", "")).startswith("57P")
    return False


class PostgresWarehouse:
    def __init__(
        self,
        conn: pg8000.native.Connection,
        reconnect: Callable[[], pg8000.native.Connection] | None = None,
    ) -> None:
        self.conn = conn
        self._reconnect = reconnect
        self._created: set[str] = set()

    @classmethod
    def from_url(cls, url: str) -> PostgresWarehouse:
        credentials = SourceCredentials.from_url(url)
        return cls(connect(credentials), reconnect=lambda: connect(credentials))

    def write_file(self, table: WarehouseTable, version: FileVersion) -> None:
        self._retried(lambda: self._apply(table, version, removed=False))

    def remove_file(self, table: WarehouseTable, key: str, generation: int) -> None:
        self._retried(lambda: self._apply(table, FileVersion(key, [], generation), removed=True))

    def generation(self, key: str) -> int | None:
        """The generation of a file applied (None: none yet); tests and operators."""
        self._ensure_generations()
        found = self.conn.run(
            "SELECT generation FROM warehouse_generation WHERE file_key = :k", k=key
        )
        return int(found[0][0]) if found else None

    def rows(self, name: str) -> list[Row]:
        """A table's rows ordered by key (tests and the demo compare them with the Parquet)."""
        table = WAREHOUSE_TABLES[name]
        self._ensure(table)
        columns = table.column_names
        result = self.conn.run(
            f"SELECT {', '.join(ident(c) for c in columns)} FROM {ident(name)} "
            f"ORDER BY {ident(table.key)}"
        )
        return [dict(zip(columns, row, strict=True)) for row in result]

    def close(self) -> None:
        with contextlib.suppress(pg8000.exceptions.InterfaceError, OSError):  # already gone
            self.conn.close()

    def _retried(self, write: Callable[[], None]) -> None:
        """The write; once more on a new connection if the connection had dropped."""
        try:
            write()
        except Exception as exc:
            if self._reconnect is None or not _dropped(exc):
                raise
            self.close()
            self.conn = self._reconnect()
            write()

    def _ensure(self, table: WarehouseTable) -> None:
        if table.name not in self._created:
            self._ensure_generations()
            self.conn.run(table_ddl(table))
            self.conn.run(added_columns_ddl(table))
            self._created.add(table.name)

    def _ensure_generations(self) -> None:
        if "warehouse_generation" not in self._created:
            self.conn.run(GENERATIONS_DDL)
            self._created.add("warehouse_generation")

    def _apply(self, table: WarehouseTable, version: FileVersion, *, removed: bool) -> None:
        """In one transaction: the file's version if newer than the one applied (a removal
        after the version it removes): only its delta when the version it replaced is the
        one applied, else the whole file; and its generation."""
        self._ensure(table)
        key, delta = version.key, version.delta
        self.conn.run("BEGIN")
        try:
            applied = self._applied(key)
            if (version.generation, removed) > applied:
                if delta is not None and applied == (delta.base, False):
                    self._upsert(table, delta.upserted)
                    self._delete_keys(table, delta.removed)
                else:
                    self._upsert(table, version.rows, replacing=key)
                self.conn.run(
                    "UPDATE warehouse_generation SET generation = :g, removed = :r "
                    "WHERE file_key = :k",
                    g=version.generation,
                    r=removed,
                    k=key,
                )
            self.conn.run("COMMIT")
        except Exception as exc:
            if not _dropped(exc):
                self.conn.run("ROLLBACK")
            raise

    def _applied(self, key: str) -> tuple[int, bool]:
        """The (generation, removed) of the file applied, its row locked till the commit."""
        self.conn.run(
            "INSERT INTO warehouse_generation VALUES (:k, -1, false) ON CONFLICT DO NOTHING",
            k=key,
        )
        ((applied, was_removed),) = self.conn.run(
            "SELECT generation, removed FROM warehouse_generation WHERE file_key = :k FOR UPDATE",
            k=key,
        )
        return int(applied), bool(was_removed)

    def _delete_keys(self, table: WarehouseTable, keys: Sequence[Any]) -> None:
        if keys:
            self.conn.run(
                f"DELETE FROM {ident(table.name)} WHERE {ident(table.key)} = ANY(:keys)",
                keys=list(keys),
            )

    def _upsert(
        self, table: WarehouseTable, rows: Sequence[Row], replacing: str | None = None
    ) -> None:
        """Upsert `rows` (inside the caller's transaction); `replacing` a file: its scope then
        holds exactly `rows`."""
        if not rows and replacing is None:
            return
        columns = table.column_names
        target, staged, pk = ident(table.name), ident(f"staged_{table.name}"), ident(table.key)
        column_list = ", ".join(ident(c) for c in columns)
        updates = ", ".join(f"{ident(c)} = EXCLUDED.{ident(c)}" for c in columns if c != table.key)
        lines = "".join("\t".join(_copy_text(r[c]) for c in columns) + "\n" for r in rows)
        self.conn.run(f"CREATE TEMP TABLE {staged} (LIKE {target}) ON COMMIT DROP")
        self.conn.run(
            f"COPY {staged} ({column_list}) FROM STDIN", stream=io.BytesIO(lines.encode())
        )
        self.conn.run(
            f"INSERT INTO {target} ({column_list}) SELECT {column_list} FROM {staged} "
            f"ON CONFLICT ({pk}) DO UPDATE SET {updates}"
        )
        if replacing is None:
            return
        scope, params = file_scope(replacing)
        self.conn.run(
            f"DELETE FROM {target} t WHERE {scope} AND NOT EXISTS "
            f"(SELECT 1 FROM {staged} s WHERE s.{pk} = t.{pk})",
            **params,
        )
