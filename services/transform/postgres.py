"""The PostgreSQL warehouse: the same rows as the Parquet files, kept by idempotent upserts.

Each write copies the rows into a temporary table (COPY, one round trip) and upserts them
(`INSERT ... ON CONFLICT (key) DO UPDATE`) in one transaction; `replace` also deletes the rows
the new set lacks (a dimension is current state; a rebuild is the whole table). Tables are
created on first use from the same column declarations as the Parquet schema.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import date, time
from decimal import Decimal
from typing import Any

import pg8000.native

from services.ingest.source import SourceCredentials, connect
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


class PostgresWarehouse:
    def __init__(self, conn: pg8000.native.Connection) -> None:
        self.conn = conn
        self._created: set[str] = set()

    @classmethod
    def from_url(cls, url: str) -> PostgresWarehouse:
        return cls(connect(SourceCredentials.from_url(url)))

    def create_tables(self) -> None:
        for table in WAREHOUSE_TABLES.values():
            self._ensure(table)

    def upsert(self, table: WarehouseTable, rows: Sequence[Row]) -> None:
        self._write(table, rows, delete_missing=False)

    def replace(self, table: WarehouseTable, rows: Sequence[Row]) -> None:
        self._write(table, rows, delete_missing=True)

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
        self.conn.close()

    def _ensure(self, table: WarehouseTable) -> None:
        if table.name not in self._created:
            self.conn.run(table_ddl(table))
            self.conn.run(added_columns_ddl(table))
            self._created.add(table.name)

    def _write(self, table: WarehouseTable, rows: Sequence[Row], *, delete_missing: bool) -> None:
        self._ensure(table)
        columns = table.column_names
        target, staged, key = ident(table.name), ident(f"staged_{table.name}"), ident(table.key)
        column_list = ", ".join(ident(c) for c in columns)
        updates = ", ".join(f"{ident(c)} = EXCLUDED.{ident(c)}" for c in columns if c != table.key)
        lines = "".join("\t".join(_copy_text(r[c]) for c in columns) + "\n" for r in rows)
        self.conn.run("BEGIN")
        try:
            self.conn.run(f"CREATE TEMP TABLE {staged} (LIKE {target}) ON COMMIT DROP")
            self.conn.run(
                f"COPY {staged} ({column_list}) FROM STDIN", stream=io.BytesIO(lines.encode())
            )
            self.conn.run(
                f"INSERT INTO {target} ({column_list}) SELECT {column_list} FROM {staged} "
                f"ON CONFLICT ({key}) DO UPDATE SET {updates}"
            )
            if delete_missing:
                self.conn.run(
                    f"DELETE FROM {target} t WHERE NOT EXISTS "
                    f"(SELECT 1 FROM {staged} s WHERE s.{key} = t.{key})"
                )
            self.conn.run("COMMIT")
        except Exception:
            self.conn.run("ROLLBACK")
            raise
