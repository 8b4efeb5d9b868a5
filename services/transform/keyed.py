"""A large dimension updated by key: an event that names its keys changes those rows only.

dim_transaction has a row per source transaction (15,800 in the real data), so rebuilding and
re-sending it whole for each changed transaction costs what the table costs. Instead the file
is read (its ETag first, as every refresh), latest is read only for the event's keys (the
partitions holding them), those rows are replaced and the rest kept. Every change of a key has
an event that reads latest after it, so each row ends current whatever order the events come
in. A key no longer live (a delete) takes the whole path, which reads latest's tombstones.
"""

from __future__ import annotations

from collections.abc import Collection

from services.transform import parquet
from services.transform.files import generation_of
from services.transform.service import FileVersion, TransformService
from services.transform.warehouse import WarehouseTable, build_dimension, sort_rows
from shared.layout import warehouse_file_key
from shared.reader import latest_versions_of


def refresh_by_key(
    service: TransformService, table: WarehouseTable, keys: Collection[int]
) -> tuple[FileVersion, bool] | None:
    """(the file now, whether this wrote it); None: the whole path must do it (no file yet,
    or a key is not live)."""
    assert len(table.sources) == 1, "by key: a dimension of one source table"
    key = warehouse_file_key(table.name)
    found = service.store.get_if_exists(key)
    if found is None:
        return None
    spec = service._spec(table.sources[0])
    live = [v.row for v in latest_versions_of(service.store, spec, set(keys))]
    if len(live) != len(set(keys)):
        return None
    before = parquet.decode(table, found.data)
    fresh = {r[table.key]: r for r in build_dimension(table, {spec.name: live})}
    rows = sort_rows(table, {**{r[table.key]: r for r in before}, **fresh}.values())
    if rows == before:
        return FileVersion(key, before, generation_of(found)), False
    return service._replaced(table, key, before, rows, found), True
