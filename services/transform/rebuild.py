"""`ingestctl transform rebuild`: every warehouse table from latest + history, beside the
live transform and under its discipline.

One table at a time, optimistically: read its manifest and every file it has (their ETags)
first; then compute the table from the sources; write each file whose bytes differ on the
ETag read (create-only where there was none); commit the manifest on the ETag read; last,
delete the files the new manifest no longer names, each on the ETag read. A 412 anywhere
redoes the table from the first read. A rebuild beside live events therefore leaves what a
rebuild after them would (the argument: docs/decisions.md, 2026-12-03 "Rebuild under the live
transform's discipline").
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import partial

from services.transform import parquet
from services.transform.change_files import computed_files
from services.transform.changes import CHANGE_TABLES
from services.transform.files import generation_of
from services.transform.service import FileVersion, TransformReport, TransformService
from services.transform.warehouse import (
    DIM_DATE,
    FACTS,
    SOURCE_DIMENSIONS,
    Row,
    WarehouseTable,
    build_dimension,
    dim_date,
    fact_dates,
    fact_rows,
    partition_month,
    sort_rows,
)
from shared.layout import warehouse_file_key
from shared.reader import iter_history, read_latest
from shared.schemas import RowModel
from shared.storage import StoredObject

Files = dict[str, list[Row]]  # key -> the rows the file holds
# dim_date after the facts, from the committed facts: a fact a live event adds later widens
# dim_date itself, after this rebuild read dim_date's ETag.
REBUILD_ORDER: tuple[WarehouseTable, ...] = (
    *FACTS,
    DIM_DATE,
    *SOURCE_DIMENSIONS,
    *CHANGE_TABLES.values(),
)


@dataclass(frozen=True)
class TableOutcome:
    """What one successful attempt at a table committed."""

    versions: list[tuple[FileVersion, bool]]  # each file now, and whether this attempt wrote it
    removed: list[tuple[str, int]]  # stale files deleted, with the generation they had


class Rebuild:
    def __init__(self, service: TransformService) -> None:
        self.service = service
        self.store = service.store
        self.files = service.files
        self.report: TransformReport = TransformReport()

    def run(self, only: Collection[str] | None = None) -> TransformReport:
        """Every table (or those named, in the same order: facts, dim_date, dimensions, change
        tables)."""
        chosen = [t for t in REBUILD_ORDER if only is None or t.name in only]
        for table in chosen:
            self._table(table, partial(self._compute, table))
        return self.report

    def _compute(self, table: WarehouseTable) -> Files:
        if table.is_fact:
            return self._fact_files(table)
        if table is DIM_DATE:
            return self._date_files()
        if table.changes_of is not None:  # every key's versions from latest + history
            spec = self.service._spec(table.changes_of)
            return computed_files(self.store, table, spec, None)
        return self._dimension_files(table)

    # ---- what each table holds, computed from the sources ------------------------------

    def _fact_files(self, fact: WarehouseTable) -> Files:
        assert fact.fact_of is not None
        spec = self.service._spec(fact.fact_of)
        # latest before history: a version latest loses meanwhile is in history by then.
        versions: list[RowModel] = list(read_latest(self.store, spec).rows)
        for _, history in iter_history(self.store, spec):
            versions += [h.row for h in history]
        by_partition: dict[str, list[Row]] = defaultdict(list)
        for row in fact_rows(spec.name, versions):
            by_partition[partition_month(row)].append(row)
        return {
            warehouse_file_key(fact.name, p): sort_rows(fact, rows)
            for p, rows in by_partition.items()
        }

    def _date_files(self) -> Files:
        dates = set()
        for fact in FACTS:
            dates |= fact_dates(self.service.read_table(fact.name), fact)
        if not dates:
            return {}
        return {warehouse_file_key(DIM_DATE.name): dim_date(min(dates), max(dates))}

    def _dimension_files(self, table: WarehouseTable) -> Files:
        latest = self.service._latest(table.sources)
        rows = build_dimension(table, latest, self.service._deleted(table.sources))
        return {warehouse_file_key(table.name): rows} if rows else {}

    # ---- one table, fenced -------------------------------------------------------------

    def _table(self, table: WarehouseTable, compute: Callable[[], Files]) -> None:
        outcome = self.files.retry(partial(self._attempt, table, compute))
        keys = [version.key for version, _ in outcome.versions]
        # The counts this attempt committed were its own; a live writer that added to a file
        # since may have found them equal to its own and left them: count the files now.
        self.files.retry(lambda: self.files.update_manifest(table, keys))
        sink = self.service.sink if table.changes_of is None else None  # no change tables there
        for version, written in outcome.versions:
            self.report.add(table.name, len(version.rows))
            if written:
                self.report.files_written.append(version.key)
            if sink is not None:
                sink.write_file(table, version)
        for key, generation in outcome.removed:
            if sink is not None:
                sink.remove_file(table, key, generation)

    def _attempt(self, table: WarehouseTable, compute: Callable[[], Files]) -> TableOutcome:
        manifest = self.store.get_if_exists(table.manifest_key)
        before = self._current_files(table)
        files = compute()  # read after every ETag it is written on
        versions = [self._write(table, k, rows, before.get(k)) for k, rows in sorted(files.items())]
        self.files.put_manifest(table, {k: len(rows) for k, rows in files.items()}, manifest)
        removed = []
        for key, found in sorted(before.items()):
            if key not in files:
                self.store.delete_if_match(key, found.etag)
                removed.append((key, generation_of(found)))
        return TableOutcome(versions, removed)

    def _current_files(self, table: WarehouseTable) -> dict[str, StoredObject]:
        found = {}
        for key in self.store.keys(table.prefix):
            stored = self.store.get_if_exists(key) if key.endswith(".parquet") else None
            if stored is not None:
                found[key] = stored
        return found

    def _write(
        self, table: WarehouseTable, key: str, rows: list[Row], found: StoredObject | None
    ) -> tuple[FileVersion, bool]:
        data = parquet.encode(table, rows)
        if found is not None and found.data == data:
            return FileVersion(key, rows, generation_of(found)), False
        return FileVersion(key, rows, self.files.put(key, data, len(rows), found)), True
