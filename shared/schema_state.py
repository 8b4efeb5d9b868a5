"""A table's schema as the bucket holds it: the registry's row model plus the columns the
source added since, where the table's policy lets them in (`TableSpec.schema_policy`).

`_state/schema/<table>.json` (a `TableSchema`) lists the added columns in the order they were
added, each with the batch that brought it. The merge writes it, before the commit that first
holds such a column (docs/merge_protocol.md, "Schema changes"); every reader of latest and
history reads it first (`effective_spec`) and reads rows with the model it gives: an added
column is nullable, and a row written before it reads it as null. Rows refuse what the model
does not name, so a reader that read the schema before an add and latest after fails (an
unknown column) and succeeds when it runs again: it never drops a column.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import replace
from datetime import date, datetime, time
from decimal import Decimal
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, PlainValidator, create_model

from shared.layout import state_key
from shared.schemas import RowModel
from shared.storage import ObjectStore, PreconditionFailedError
from shared.tables import TableSpec
from shared.types import INT64_MAX, INT64_MIN, check_text


def added_value_of(value: Any) -> Any:
    """A source value (as pg8000 or the wal2json reader gives it) as an added column holds
    it: text, number, boolean or null. Timestamps, dates, times, UUIDs and intervals become
    their ISO / text form, JSON its text as PostgreSQL writes jsonb, bytes PostgreSQL's hex
    form. What the log gives as text for a type it has no converter for stays that text."""
    if value is None or isinstance(value, bool | int | Decimal | str):
        return value
    if isinstance(value, float):
        return Decimal(repr(value)) if math.isfinite(value) else repr(value)
    if isinstance(value, datetime):
        return value.isoformat(timespec="microseconds")
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, dict | list):  # as PostgreSQL writes jsonb (wal2json's text)
        return json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    return str(value)


def _added_value(value: Any) -> Any:
    """One clear error for a value an added column cannot hold (a union's would be four)."""
    kind = type(value)
    if value is None or kind in (bool, Decimal):
        return value
    if kind is int and INT64_MIN <= value <= INT64_MAX:
        return value
    if kind is str:
        return check_text(value)
    raise ValueError(
        "an added column holds text, a number in the warehouse's range, a boolean or null; "
        f"got {kind.__name__}"
    )


# What an added column holds: the staged file's JSON value, whatever the source's type
# (the ingest writes timestamps, dates, UUIDs and JSON as text, numbers as numbers).
AddedValue = Annotated[str | int | Decimal | bool | None, PlainValidator(_added_value)]
# The column names a policy may add: a PostgreSQL identifier as written unquoted, and not an
# audit column (those start with `_`).
ADDABLE_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
_WRITE_ATTEMPTS = 5


class AddedColumn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    batch: str  # the batch whose rows first held it
    added_at: datetime  # when that batch was read (its observation), not the clock


class TableSchema(BaseModel):
    """`_state/schema/<table>.json`: the columns added to the registry's model, in order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    table: str
    added: list[AddedColumn] = []


def schema_key(table: str) -> str:
    return state_key("schema", f"{table}.json")


# extended model -> (the registry's model, the columns it adds): so extending twice gives the
# very class extending once would, and rows of either compare equal
_ORIGINS: dict[type[RowModel], tuple[type[RowModel], tuple[str, ...]]] = {}


@lru_cache(maxsize=256)
def _extended(base: type[RowModel], added: tuple[str, ...]) -> type[RowModel]:
    fields = dict.fromkeys(added, (AddedValue, None))
    model: type[RowModel] = create_model(base.__name__, __base__=base, **fields)  # type: ignore[call-overload]
    _ORIGINS[model] = (base, added)
    return model


def with_columns(spec: TableSpec, names: Sequence[str]) -> TableSpec:
    """`spec` whose rows may also hold `names` (nullable, after its own columns, in order)."""
    base, added = _ORIGINS.get(spec.row_model, (spec.row_model, ()))
    more = tuple(dict.fromkeys(n for n in names if n not in spec.columns))
    if not more:
        return spec
    return replace(spec, row_model=_extended(base, added + more))


def added_columns(spec: TableSpec) -> tuple[str, ...]:
    """The columns `spec`'s model adds to the registry's, in the order they were added."""
    return _ORIGINS.get(spec.row_model, (spec.row_model, ()))[1]


def read_schema(store: ObjectStore, table: str) -> tuple[TableSchema, str | None]:
    """The table's schema state and its ETag (None: nothing added yet, no object)."""
    found = store.get_if_exists(schema_key(table))
    if found is None:
        return TableSchema(table=table), None
    return TableSchema.model_validate_json(found.data), found.etag


def effective_spec(store: ObjectStore, spec: TableSpec) -> TableSpec:
    """The registry's spec with the columns the bucket's schema state adds."""
    schema, _ = read_schema(store, spec.name)
    return with_columns(spec, [column.name for column in schema.added])


def add_columns(
    store: ObjectStore, spec: TableSpec, names: Sequence[str], batch: str, at: datetime
) -> TableSpec:
    """Record `names` as added by `batch` (those not recorded yet), by a conditional write
    that another merge's add cannot overwrite; the spec with every recorded column."""
    for _ in range(_WRITE_ATTEMPTS):
        schema, etag = read_schema(store, spec.name)
        held = {column.name for column in schema.added}
        new = [AddedColumn(name=n, batch=batch, added_at=at) for n in names if n not in held]
        recorded = with_columns(spec, [c.name for c in [*schema.added, *new]])
        if not new:
            return recorded
        data = schema.model_copy(update={"added": [*schema.added, *new]}).model_dump_json()
        try:
            store.put(schema_key(spec.name), data.encode(), if_match=etag, create_only=not etag)
        except PreconditionFailedError:
            continue  # another merge added a column meanwhile: read it again
        return recorded
    raise SchemaStateConflictError(f"{schema_key(spec.name)}: kept changing under this merge")


class SchemaStateConflictError(Exception):
    """The schema state kept changing past the retry budget; the message is retried."""
