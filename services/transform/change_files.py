"""Keeping the change tables (services/transform/changes.py) current, one merge event at a time.

An event names the keys whose versions it changed: the keys it wrote into latest and the keys
of its history object (a late version goes to history only, and so does a deleted key's last
row, marked with its delete). For the
files those keys are in, each key's versions are computed again from latest and history as
they are now (shared/timeline.py, what `ingestctl history` reads) and replace the key's rows.
A key's rows depend on nothing but its own versions, and every change of a key has an event
processed after that change committed, so each key ends as its history shows it, whatever
order the events come in and however often; a version is never added, only recomputed. An
event that cannot name its keys (a baseline, a truncated key list) recomputes the whole table.

Each file is read (its ETag) before the sources, and written only when its bytes change, on
that ETag (create-only where there was none): a transform that read older sources than
another's write fails its condition and recomputes. The rebuild computes every key the same
way (services/transform/rebuild.py).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from functools import partial

from services.transform import parquet
from services.transform.changes import (
    CHANGE_TABLES,
    change_files,
    change_rows,
    changes_file_key,
    first_key,
    sort_changes,
)
from services.transform.files import generation_of
from services.transform.service import (
    FileVersion,
    SourceChange,
    TransformReport,
    TransformService,
)
from services.transform.warehouse import Row, WarehouseTable
from shared.reader import read_history
from shared.storage import BucketStore, StoredObject
from shared.tables import TableSpec
from shared.timeline import key_timelines

Files = dict[str, list[Row]]


def computed_files(
    store: BucketStore, table: WarehouseTable, spec: TableSpec, keys: Collection[int] | None
) -> Files:
    """The change rows of `keys` (None: every key), as the sources hold them now, by file."""
    wanted = None if keys is None else set(keys)
    return change_files(table, change_rows(table, key_timelines(store, spec, wanted)))


def changed_keys(store: BucketStore, spec: TableSpec, change: SourceChange) -> set[int] | None:
    """The keys whose versions the event may have changed (None: it cannot say)."""
    if change.keys is None:
        return None
    keys = set(change.keys)
    if change.history_key:  # a late version's key, and a deleted key's last row
        history = read_history(store, spec, change.history_key)
        keys |= {getattr(h.row, spec.primary_key) for h in history}
    return keys


class ChangeFiles:
    """One change table's files under the live transform's discipline."""

    def __init__(self, service: TransformService) -> None:
        self.service = service
        self.store = service.store
        self.files = service.files

    def apply(self, change: SourceChange, report: TransformReport) -> None:
        table = CHANGE_TABLES[change.table]
        spec = self.service._spec(change.table)
        keys = changed_keys(self.store, spec, change)
        if keys is not None and not keys:
            return
        versions = self.files.retry(partial(self._attempt, table, spec, keys))
        for version, written in versions:
            report.add(table.name, len(version.rows) if written else 0)
            if written:
                report.files_written.append(version.key)
        touched = [version.key for version, _ in versions]
        self.files.retry(lambda: self.files.update_manifest(table, touched))

    def _attempt(
        self, table: WarehouseTable, spec: TableSpec, keys: set[int] | None
    ) -> list[tuple[FileVersion, bool]]:
        found = self._read_files(table, keys)  # every ETag before the sources
        fresh = computed_files(self.store, table, spec, keys)
        out = []
        for key in sorted(found.keys() | fresh.keys()):
            stored = found.get(key)
            before = parquet.decode(table, stored.data) if stored else []
            kept = [] if keys is None else [r for r in before if r[table.key] not in keys]
            rows = sort_changes(table, [*kept, *fresh.get(key, [])])
            out.append(self._write(table, key, rows, stored))
        return [(version, written) for version, written in out if version.rows or written]

    def _read_files(
        self, table: WarehouseTable, keys: set[int] | None
    ) -> Mapping[str, StoredObject | None]:
        """The files holding `keys` (None: every file of the table), as they are now."""
        assert table.changes_of is not None
        if keys is None:
            names = [k for k in self.store.keys(table.prefix) if k.endswith(".parquet")]
        else:
            names = sorted({changes_file_key(table.changes_of, first_key(k)) for k in keys})
        return {name: self.store.get_if_exists(name) for name in names}

    def _write(
        self, table: WarehouseTable, key: str, rows: list[Row], found: StoredObject | None
    ) -> tuple[FileVersion, bool]:
        """The file replaced by `rows` if its bytes differ (no rows: none to write; history is
        create-only, so a file's keys never lose every version)."""
        if not rows:
            return FileVersion(key, [], generation_of(found)), False
        data = parquet.encode(table, rows)
        if found is not None and found.data == data:
            return FileVersion(key, rows, generation_of(found)), False
        return FileVersion(key, rows, self.files.put(key, data, len(rows), found)), True
