"""`ingestctl query "SQL"`: DuckDB over the bucket, with the tables named as Athena sees them.

Views, by the names of the Glue tables (infra: one per warehouse table and change table):
- every warehouse table (`fact_sales_order`, `dim_date`, ...): its Parquet files, with a fact's
  Hive partition column (`created_month`) last, as Athena's partition key is;
- every change table (`changes_sales_order`, ...: services/transform/changes.py);
- `latest_<table>` for every source table: latest's live rows (a deleted key's tombstone line
  is left out), the registry's columns typed as the change table types them. Athena has no
  table for latest (its JSON arrays are not what Athena's JSON readers take).

The objects are read through the project's own S3 adapter (`ObjectStore`), not DuckDB's
httpfs (no extension can be downloaded here, and the adapter already finds the bucket the same
way on AWS and on the local runtime: docs/decisions.md, 2026-12-03 "ingestctl query"). Only the
tables the SQL names are read: a warehouse or change table's files are listed under its
location, as Athena lists them, copied into a temporary folder and read there by DuckDB.
"""

from __future__ import annotations

import csv
import io
import json
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from services.transform.changes import CHANGE_TABLES, VERSION_COLUMNS
from services.transform.parquet import arrow_schema
from services.transform.warehouse import WAREHOUSE_TABLES, Column, Kind, WarehouseTable
from shared.reader import iter_latest
from shared.schema_state import effective_spec
from shared.storage import ObjectStore
from shared.tables import TABLES, TableSpec

LATEST_PREFIX = "latest_"
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class QueryError(Exception):
    """The SQL did not run: DuckDB's own message (a syntax error, an unknown table)."""


class QueryResult(BaseModel):
    """What a query returned: its columns, their DuckDB types and its rows, in order."""

    model_config = ConfigDict(frozen=True)

    columns: list[str]
    types: list[str]
    rows: list[tuple[Any, ...]]


def as_json(result: QueryResult) -> str:
    """A JSON array, one object a line per row: money an exact JSON number (its own digits,
    never through a binary float), dates and times ISO 8601, NULL null."""
    records = [
        "{"
        + ", ".join(
            f"{json.dumps(c)}: {_json_value(v)}" for c, v in zip(result.columns, row, strict=True)
        )
        + "}"
        for row in result.rows
    ]
    return "[\n" + ",\n".join(f"  {r}" for r in records) + "\n]" if records else "[]"


def _json_value(value: Any) -> str:
    if isinstance(value, Decimal) and value.is_finite():
        return format(value, "f")
    if isinstance(value, date | time | datetime):
        return json.dumps(value.isoformat())
    if value is None or isinstance(value, bool | int | float | str):
        return json.dumps(value)
    return json.dumps(str(value))


def as_csv(result: QueryResult) -> str:
    """A header line, then the rows (NULL: an empty field)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(result.columns)
    writer.writerows([cell_text(v, null="") for v in row] for row in result.rows)
    return out.getvalue()


def cell_text(value: Any, *, null: str = "NULL") -> str:
    if value is None:
        return null
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, date | time | datetime):
        return value.isoformat(sep=" ") if isinstance(value, datetime) else value.isoformat()
    return str(value)


def latest_view_name(source_table: str) -> str:
    return f"{LATEST_PREFIX}{source_table}"


@dataclass(frozen=True)
class ParquetView:
    """A warehouse or change table: the Parquet files under its location."""

    table: WarehouseTable


@dataclass(frozen=True)
class LatestView:
    """latest of a source table."""

    spec: TableSpec
    table: WarehouseTable  # its columns: the change table's source columns


View = ParquetView | LatestView


def _views() -> dict[str, View]:
    views: dict[str, View] = {name: ParquetView(t) for name, t in WAREHOUSE_TABLES.items()}
    views |= {t.name: ParquetView(t) for t in CHANGE_TABLES.values()}
    for name, spec in TABLES.items():
        # the change table's source columns: the registry's, typed
        source_columns = CHANGE_TABLES[name].columns[: -len(VERSION_COLUMNS)]
        view = latest_view_name(name)
        table = WarehouseTable(view, source_columns, key=spec.primary_key, sources=(name,))
        views[view] = LatestView(spec, table)
    return views


VIEWS: Mapping[str, View] = _views()


def referenced_views(sql: str) -> set[str]:
    """The views the SQL may name: every word of it that is a view's name (a word in a
    string or a comment costs a read, no more). Not DuckDB's own `get_table_names`: it binds
    without a catalog, and fails on a join `USING` a column."""
    return {word.lower() for word in _WORD.findall(sql)} & VIEWS.keys()


def run_query(store: ObjectStore, sql: str) -> QueryResult:
    """Run `sql` over the views it names, read from `store` now."""
    wanted = referenced_views(sql)
    with (
        tempfile.TemporaryDirectory(prefix="ingestctl-query-") as folder,
        duckdb.connect() as db,
    ):
        db.execute("SET TimeZone = 'UTC'")  # the bucket's timestamps are naive UTC
        for name in sorted(wanted):
            _create_view(db, store, name, VIEWS[name], Path(folder))
        try:
            cursor = db.execute(sql)
            description = cursor.description or []
            rows = cursor.fetchall() if description else []
        except duckdb.Error as exc:
            raise QueryError(str(exc)) from None
    return QueryResult(
        columns=[d[0] for d in description],
        types=[str(d[1]) for d in description],
        rows=rows,
    )


def _create_view(
    db: duckdb.DuckDBPyConnection, store: ObjectStore, name: str, view: View, folder: Path
) -> None:
    if isinstance(view, LatestView):
        db.register(name, _latest_arrow(store, view))
        return
    table = view.table
    files = parquet_keys(store, table)
    if not files:
        db.register(name, _empty(table))
        return
    for key in files:
        path = folder / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(store.get(key).data)
    pattern = _literal(str(folder / table.prefix) + "/**/*.parquet")
    options = ""
    if table.partition_column:
        options = (
            f", hive_partitioning = true, hive_types = {{'{table.partition_column}': VARCHAR}}"
        )
    db.execute(f'CREATE VIEW "{name}" AS SELECT * FROM read_parquet({pattern}{options})')


def parquet_keys(store: ObjectStore, table: WarehouseTable) -> list[str]:
    """A table's Parquet objects, as Athena finds them: every `.parquet` key under its
    location (the `_manifest.json` beside them is not data)."""
    return sorted(key for key in store.keys(table.prefix) if key.endswith(".parquet"))


def _empty(table: WarehouseTable) -> pa.Table:
    """No files yet: no rows, the columns all the same."""
    schema = arrow_schema(table)
    if table.partition_column:
        schema = schema.append(pa.field(table.partition_column, pa.string()))
    return schema.empty_table()


def _latest_arrow(store: ObjectStore, view: LatestView) -> pa.Table:
    """latest's live rows (iter_latest leaves tombstones out), a partition at a time, read
    with the columns the source added (the bucket's schema state) and typed as the change
    table's source columns."""
    spec = effective_spec(store, view.spec)
    schema = arrow_schema(view.table)
    parts = [
        pa.Table.from_pylist(list(_typed_rows(view.table.columns, rows)), schema=schema)
        for rows, _ in iter_latest(store, spec)
    ]
    return pa.concat_tables(parts) if parts else schema.empty_table()


def _typed_rows(columns: tuple[Column, ...], rows: Iterable[Any]) -> Iterable[dict[str, Any]]:
    for row in rows:
        values = row.model_dump()
        yield {c.name: _typed(c.kind, values[c.name]) for c in columns}


def _typed(kind: Kind, value: Any) -> Any:
    """A row model's value as its column holds it: a date column's text is a date."""
    if kind is Kind.DATE and isinstance(value, str):
        return date.fromisoformat(value)
    return value


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
