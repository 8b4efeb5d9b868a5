"""Keeps the warehouse current: one merge event at a time, or everything at once (rebuild).

Incremental strategy (docs/decisions.md "The transform"):
- Facts: an event names a batch; its versions are the rows of the batch's history object plus
  latest's rows for the keys it wrote (all of latest when the key list was truncated, or for a
  promoted baseline). Their fact rows are unioned, by record id, into the monthly partitions
  they fall in. A union is idempotent and commutative, so a replayed or out-of-order event
  leaves the same set of rows an in-order pass would; every version reaches some event
  (latest plus history is the complete version log and every history object has its event).
- Source dimensions hold current values: a dimension whose sources (joins included) the event
  touched is rebuilt whole from latest (small tables), so an old event can never bring back
  an old value; a large one (dim_transaction) has the event's keys' rows replaced from
  latest instead (services/transform/keyed.py).
- dim_date is the calendar from the first to the last date any fact refers to; facts only
  grow, so widening the range by each event's dates equals computing it over every fact.
- Change tables: the versions of the keys the event changed are computed again from latest
  and history and replace those keys' rows (services/transform/change_files.py).
Every file is replaced with a conditional write on the ETag it was read at (two transforms at
once redo, not lose, an update), only when its bytes change, and numbered by a generation the
sink applies in order (services/transform/files.py). The rebuild keeps the same discipline
(services/transform/rebuild.py).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import partial
from typing import Any, Protocol

from services.transform import parquet
from services.transform.changes import ALL_TABLES
from services.transform.deletes import deleted_rows
from services.transform.files import WarehouseFiles, generation_of
from services.transform.warehouse import (
    DIM_DATE,
    FACT_BY_SOURCE,
    Deleted,
    Row,
    WarehouseTable,
    build_dimension,
    dim_date,
    dimensions_of,
    fact_dates,
    fact_rows,
    partition_month,
    sort_rows,
)
from shared.events import BaselinePromoted, HistoryAppended, WarehouseUpdated, event_id
from shared.layout import warehouse_file_key
from shared.reader import latest_versions_of, read_history, read_latest
from shared.schema_state import effective_spec
from shared.schemas import RowModel
from shared.storage import BucketStore, StoredObject
from shared.tables import TableSpec, get_table


@dataclass(frozen=True)
class SourceChange:
    """What one merge event says changed: the batch's history object and latest's keys."""

    cause: str  # the merge event's id
    table: str
    batch: str | None
    history_key: str | None
    keys: frozenset[int] | None  # None: every key of latest

    @classmethod
    def from_event(cls, detail: HistoryAppended | BaselinePromoted) -> SourceChange:
        if isinstance(detail, BaselinePromoted):
            return cls(detail.event_id, detail.table, detail.batch, None, None)
        keys = None if detail.keys_truncated else frozenset(detail.keys_written)
        return cls(detail.event_id, detail.table, detail.batch, detail.history_key, keys)


@dataclass(frozen=True)
class FileDelta:
    """How a file version differs from the one it replaced (generation `base`): the rows new
    or changed, and the keys gone. A sink that holds `base` applies this alone."""

    base: int
    upserted: list[Row]
    removed: list[Any]


def file_delta(
    table: WarehouseTable, before: Sequence[Row], after: Sequence[Row], base: int
) -> FileDelta:
    old = {r[table.key]: r for r in before}
    kept = {r[table.key] for r in after}
    changed = [r for r in after if old.get(r[table.key]) != r]
    return FileDelta(base, changed, [k for k in old if k not in kept])


@dataclass(frozen=True)
class FileVersion:
    """One committed version of a warehouse file: its rows, its generation and, when this
    transform wrote it, how it differs from the version it replaced."""

    key: str
    rows: list[Row]
    generation: int
    delta: FileDelta | None = None


class WarehouseSink(Protocol):
    """Somewhere else the warehouse rows go (a PostgreSQL warehouse), after the Parquet: each
    file's rows as one version of it committed, numbered by its generation; the sink keeps
    the highest generation of each file, so versions arriving late or twice change nothing."""

    def write_file(self, table: WarehouseTable, version: FileVersion) -> None: ...

    def remove_file(self, table: WarehouseTable, key: str, generation: int) -> None: ...


@dataclass
class TransformReport:
    """Rows written per warehouse table (0: looked at, nothing changed)."""

    tables: dict[str, int] = field(default_factory=dict)
    files_written: list[str] = field(default_factory=list)

    def add(self, table: str, rows: int) -> None:
        self.tables[table] = self.tables.get(table, 0) + rows

    @property
    def rows_written(self) -> int:
        return sum(self.tables.values())


class TransformService:
    def __init__(
        self,
        store: BucketStore,
        *,
        sink: WarehouseSink | None = None,
        conflict_retries: int = 5,
    ) -> None:
        self.store = store
        self.sink = sink
        self.files = WarehouseFiles(store, conflict_retries)

    # ---- incremental -------------------------------------------------------------------

    def apply(self, change: SourceChange) -> TransformReport:
        spec = self._spec(change.table)
        report = TransformReport()
        fact = FACT_BY_SOURCE.get(spec.name)
        if fact is not None:
            versions: list[RowModel] = []
            if change.history_key:
                versions += [h.row for h in read_history(self.store, spec, change.history_key)]
            if change.keys is None:
                versions += read_latest(self.store, spec).rows
            else:  # only the partitions of latest that hold the keys the event wrote
                versions += [v.row for v in latest_versions_of(self.store, spec, set(change.keys))]
            rows = fact_rows(spec.name, versions)
            self._add_facts(fact, rows, report)
            self._widen_dates(fact_dates(rows, fact), report)
        for dimension in dimensions_of(spec.name):
            self._refresh_dimension(dimension, report, change.keys)
        from services.transform.change_files import ChangeFiles

        ChangeFiles(self).apply(change, report)
        return report

    def updated_event(self, change: SourceChange, report: TransformReport) -> WarehouseUpdated:
        return WarehouseUpdated(
            event_id=event_id(WarehouseUpdated.detail_type(), change.cause),
            cause=change.cause,
            source_table=change.table,
            batch=change.batch,
            tables=dict(sorted(report.tables.items())),
        )

    # A retry after a crash finds the Parquet already written; so the sink and the manifest
    # are brought up to date whether or not this attempt changed a file (both are idempotent:
    # the sink is sent the file's rows with its generation and skips one it has applied).

    def _add_facts(
        self, table: WarehouseTable, rows: Sequence[Row], report: TransformReport
    ) -> None:
        by_partition: dict[str, list[Row]] = defaultdict(list)
        for row in rows:
            by_partition[partition_month(row)].append(row)
        keys = []
        for partition, new_rows in sorted(by_partition.items()):
            key = warehouse_file_key(table.name, partition)
            added, version = self.files.retry(partial(self._union_file, table, key, new_rows))
            keys.append(key)
            report.add(table.name, added)
            if added:
                report.files_written.append(key)
            self._send(table, version)
        self.files.retry(lambda: self.files.update_manifest(table, keys))

    def _union_file(
        self, table: WarehouseTable, key: str, rows: Sequence[Row]
    ) -> tuple[int, FileVersion]:
        """Add the rows whose record ids the file lacks; (rows added, the file now)."""
        found = self.store.get_if_exists(key)
        existing = parquet.decode(table, found.data) if found else []
        have = {r[table.key] for r in existing}
        added = [r for r in rows if r[table.key] not in have]
        if not added:
            return 0, FileVersion(key, existing, generation_of(found))
        merged = sort_rows(table, [*existing, *added])
        generation = self.files.put(key, parquet.encode(table, merged), len(merged), found)
        delta = FileDelta(generation_of(found), added, []) if found else None
        return len(added), FileVersion(key, merged, generation, delta)

    def _widen_dates(self, dates: set[date], report: TransformReport) -> None:
        if not dates:
            return
        key = warehouse_file_key(DIM_DATE.name)

        def attempt() -> tuple[FileVersion, bool]:
            found = self.store.get_if_exists(key)
            before = parquet.decode(DIM_DATE, found.data) if found else []
            days = [r["date_id"] for r in before]
            first, last = min([*days, *dates]), max([*days, *dates])
            rows = dim_date(first, last)
            if found is not None and (first, last) == (days[0], days[-1]):
                return FileVersion(key, rows, generation_of(found)), False
            return self._replaced(DIM_DATE, key, before, rows, found), True

        version, changed = self.files.retry(attempt)
        self._written(DIM_DATE, version, changed, report)

    def _refresh_dimension(
        self, table: WarehouseTable, report: TransformReport, keys: frozenset[int] | None
    ) -> None:
        if table.by_key and keys is not None:
            from services.transform.keyed import refresh_by_key

            keyed = self.files.retry(partial(refresh_by_key, self, table, keys))
            if keyed is not None:
                self._written(table, *keyed, report)
                return
        key = warehouse_file_key(table.name)

        def attempt() -> tuple[FileVersion | None, bool]:
            """(the file now (None: none), whether this attempt wrote it)."""
            # Read the file's ETag before latest: a write based on an older latest than
            # another transform's then fails its condition and is redone.
            found = self.store.get_if_exists(key)
            rows = build_dimension(table, self._latest(table.sources), self._deleted(table.sources))
            data = parquet.encode(table, rows)
            if found is not None and found.data == data:
                return FileVersion(key, rows, generation_of(found)), False
            if found is None and not rows:
                return None, False
            before = parquet.decode(table, found.data) if found else []
            return self._replaced(table, key, before, rows, found, data), True

        version, changed = self.files.retry(attempt)
        if version is not None:
            self._written(table, version, changed, report)

    def _written(
        self, table: WarehouseTable, version: FileVersion, changed: bool, report: TransformReport
    ) -> None:
        """A one-file table's version: reported, sent to the sink, named in the manifest."""
        report.add(table.name, len(version.rows) if changed else 0)
        if changed:
            report.files_written.append(version.key)
        self._send(table, version)
        self.files.retry(lambda: self.files.update_manifest(table, [version.key]))

    def _replaced(
        self,
        table: WarehouseTable,
        key: str,
        before: list[Row],
        rows: list[Row],
        found: StoredObject | None,
        data: bytes | None = None,
    ) -> FileVersion:
        """A one-file table's file replaced by `rows` (conditionally on `found`)."""
        encoded = data if data is not None else parquet.encode(table, rows)
        generation = self.files.put(key, encoded, len(rows), found)
        delta = file_delta(table, before, rows, generation_of(found)) if found else None
        return FileVersion(key, rows, generation, delta)

    def _send(self, table: WarehouseTable, version: FileVersion) -> None:
        if self.sink is not None:
            self.sink.write_file(table, version)

    # ---- rebuild -----------------------------------------------------------------------

    def rebuild(self, only: Collection[str] | None = None) -> TransformReport:
        """Every warehouse table (or those named) from latest + history, under the live
        path's discipline (services/transform/rebuild.py)."""
        from services.transform.rebuild import Rebuild

        return Rebuild(self).run(only)

    # ---- reading the warehouse ---------------------------------------------------------

    def read_table(self, name: str) -> list[Row]:
        """Every row of a warehouse or change table, in file order (tests, the demo, the
        loader)."""
        table = ALL_TABLES[name]
        found = self.store.get_if_exists(table.manifest_key)
        if found is None:
            return []
        files = json.loads(found.data)["files"]
        rows: list[Row] = []
        for key in sorted(files):
            rows += parquet.decode(table, self.store.get(key).data)
        return rows

    # ---- helpers -----------------------------------------------------------------------

    def _spec(self, table: str) -> TableSpec:
        """The source table's spec as the bucket's rows hold it (columns the source added
        included: shared/schema_state.py); the warehouse's columns stay the registry's."""
        return effective_spec(self.store, get_table(table))

    def _latest(self, tables: Iterable[str]) -> dict[str, list[RowModel]]:
        return {t: read_latest(self.store, self._spec(t)).rows for t in tables}

    def _deleted(self, tables: Iterable[str]) -> dict[str, dict[int, Deleted]]:
        return {t: deleted_rows(self.store, self._spec(t)) for t in tables}
