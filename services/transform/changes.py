"""The change tables: for every source table, every version of every row (what dbt snapshots
and Fivetran's history mode keep), as `ingestctl history` derives them (shared/timeline.py).

`changes_<table>` has one row per version, in the order `ingestctl history` gives them:
- the source columns (the registry's; a column the source added is not kept, as in the
  warehouse), typed: timestamps, dates (the source's date text), money, 64-bit integers;
- `version`: 1, 2, ... in the key's version order;
- `valid_from`, `valid_to`: when it became current, and when the next version did or a delete
  ended it (null: current). The table as of `t` is `valid_from <= t AND (valid_to IS NULL OR
  valid_to > t)`; the live table is `valid_to IS NULL`;
- `operation`: the change that made the version as the capture recorded it (insert, update;
  null for versions stored before changes were kept);
- `deleted_at`: when a delete ended the version (then also its `valid_to`); a deleted key
  has no row of its own for the delete (docs/decisions.md, 2026-12-03 "Change tables");
- `commit_ts`, `commit_lsn`, `commit_xid`: the source commit that made it, in log mode; null
  for a polled table (its `_commit_ts` is only the row's `last_updated`).

Files: `warehouse/changes/<table>/part-<first key>.parquet` (shared/layout.py), one per block of
`KEYS_PER_FILE` keys, so all of a key's versions are in one file; not Hive-partitioned. Each
table has a `_manifest.json` like the warehouse tables. Pure code: the passes that keep the
files are in services/transform/change_files.py.
"""

from __future__ import annotations

import types
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic.fields import FieldInfo

from services.transform.warehouse import (
    WAREHOUSE_TABLES,
    Column,
    Kind,
    Row,
    WarehouseTable,
    money,
    parse_columns,
)
from shared.layout import changes_file_key, changes_prefix
from shared.tables import AUTO_PARTITION_ROWS, TABLES, TableSpec, get_table
from shared.timeline import RowVersion
from shared.types import parse_date_text, parse_timestamp

__all__ = [
    "ALL_TABLES",
    "CHANGE_TABLES",
    "CHANGE_TABLES_BY_NAME",
    "KEYS_PER_FILE",
    "VERSION_COLUMNS",
    "change_files",
    "change_prefix",
    "change_rows",
    "change_table",
    "change_table_name",
    "changes_file_key",
]

# Keys per file: a file is what one event's keys cost to rewrite.
KEYS_PER_FILE = AUTO_PARTITION_ROWS
VERSION = "version"
VERSION_COLUMNS = parse_columns(
    "version:int valid_from:timestamp valid_to:timestamp? operation:text? "
    "deleted_at:timestamp? commit_ts:timestamp? commit_lsn:text? commit_xid:bigint?"
)
change_prefix = changes_prefix  # `warehouse/changes/<table>/`: the Glue table's location


def change_table_name(source_table: str) -> str:
    """The change table's name (its Glue table and `ingestctl query` view)."""
    return f"changes_{source_table}"


def _unwrapped(annotation: Any) -> tuple[Any, tuple[Any, ...], bool]:
    """(the base type, its Annotated metadata, whether None is allowed)."""
    nullable = False
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        nullable = len(args) < len(get_args(annotation))
        (annotation,) = args
    if get_origin(annotation) is Annotated:
        base, *metadata = get_args(annotation)
        return base, tuple(metadata), nullable
    return annotation, (), nullable


_BASE_KINDS: Mapping[Any, Kind] = {
    datetime: Kind.TIMESTAMP,
    bool: Kind.BOOL,
    int: Kind.BIGINT,
    Decimal: Kind.MONEY,
    str: Kind.TEXT,
}


def source_column(name: str, field: FieldInfo) -> Column:
    """A source column's kind, from its row model's type (shared/schemas.py)."""
    base, metadata, nullable = _unwrapped(field.annotation)
    metadata += tuple(field.metadata)
    if base is str and any(getattr(m, "func", None) is parse_date_text for m in metadata):
        return Column(name, Kind.DATE, nullable)
    return Column(name, _BASE_KINDS[base], nullable)


def change_table(source_table: str) -> WarehouseTable:
    """The change table of a registered source table."""
    spec = get_table(source_table)
    fields = spec.row_model.model_fields
    columns = tuple(source_column(name, fields[name]) for name in spec.columns)
    clash = {c.name for c in columns} & {c.name for c in VERSION_COLUMNS}
    if clash:
        raise ValueError(f"{source_table}: columns {sorted(clash)} clash with the change columns")
    return WarehouseTable(
        change_table_name(source_table),
        (*columns, *VERSION_COLUMNS),
        key=spec.primary_key,
        sources=(source_table,),
        changes_of=source_table,
        location=changes_prefix(source_table),
    )


# source table -> its change table; and by the change table's own name
CHANGE_TABLES: Mapping[str, WarehouseTable] = {name: change_table(name) for name in TABLES}
CHANGE_TABLES_BY_NAME: Mapping[str, WarehouseTable] = {t.name: t for t in CHANGE_TABLES.values()}
# Every table the transform writes, by name: the warehouse's and the change tables (the Glue
# catalog's tables, `ingestctl query`'s views).
ALL_TABLES: Mapping[str, WarehouseTable] = {**WAREHOUSE_TABLES, **CHANGE_TABLES_BY_NAME}


# ---- rows ----------------------------------------------------------------------------------


def _timestamp(value: Any) -> datetime:
    return parse_timestamp(value)


def _date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(parse_date_text(value))


def _money(value: Any) -> Decimal:
    return money(value if isinstance(value, Decimal) else Decimal(str(value)))


# How a stored (JSON) value becomes the column's Python value; kinds not named pass as they are.
_CONVERT: Mapping[Kind, Callable[[Any], Any]] = {
    Kind.TIMESTAMP: _timestamp,
    Kind.DATE: _date,
    Kind.MONEY: _money,
}


def _source_values(table: WarehouseTable, row: Mapping[str, Any]) -> Row:
    out: Row = {}
    for column in table.columns[: -len(VERSION_COLUMNS)]:
        value = row.get(column.name)
        convert = _CONVERT.get(column.kind)
        out[column.name] = value if value is None or convert is None else convert(value)
    return out


def _version_values(number: int, version: RowVersion) -> Row:
    change = version.change
    logged = change is not None and change.lsn is not None
    return {
        VERSION: number,
        "valid_from": version.valid_from,
        "valid_to": version.valid_to,
        "operation": version.op,
        "deleted_at": version.deleted_at,
        "commit_ts": change.commit_ts if change is not None and logged else None,
        "commit_lsn": change.lsn if change is not None else None,
        "commit_xid": change.xid if change is not None else None,
    }


def change_rows(table: WarehouseTable, timelines: Mapping[Any, Sequence[RowVersion]]) -> list[Row]:
    """The change table's rows of the keys given (each key's versions, oldest first), sorted
    by key, then version."""
    return [
        {**_source_values(table, version.row), **_version_values(number, version)}
        for key in sorted(timelines)
        for number, version in enumerate(timelines[key], 1)
    ]


def first_key(key: int) -> int:
    """The first key of the file `key` is in."""
    return key // KEYS_PER_FILE * KEYS_PER_FILE


def sort_changes(table: WarehouseTable, rows: Iterable[Row]) -> list[Row]:
    """The one row order of a change file: by key, then version."""
    return sorted(rows, key=lambda r: (r[table.key], r[VERSION]))


def change_files(table: WarehouseTable, rows: Iterable[Row]) -> dict[str, list[Row]]:
    """Rows by the file that holds them (file key -> rows in file order)."""
    assert table.changes_of is not None
    by_file: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_file[changes_file_key(table.changes_of, first_key(row[table.key]))].append(row)
    return {key: sort_changes(table, found) for key, found in sorted(by_file.items())}


def spec_of(table: WarehouseTable) -> TableSpec:
    assert table.changes_of is not None
    return get_table(table.changes_of)
