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
  an old value.
- dim_date is the calendar from the first to the last date any fact refers to; facts only
  grow, so widening the range by each event's dates equals computing it over every fact.
Every file is replaced with a conditional write on the ETag it was read at (two transforms at
once redo, not lose, an update), and only when its bytes change.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import partial
from typing import Protocol, TypeVar

from services.transform import parquet
from services.transform.deletes import deleted_rows
from services.transform.warehouse import (
    DIM_DATE,
    FACT_BY_SOURCE,
    FACTS,
    SOURCE_DIMENSIONS,
    WAREHOUSE_TABLES,
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
from shared.layout import warehouse_file_key, warehouse_manifest_key, warehouse_prefix
from shared.reader import iter_history, read_history, read_latest
from shared.schema_state import effective_spec
from shared.schemas import RowModel
from shared.storage import BucketStore, PreconditionFailedError
from shared.tables import TableSpec, get_table

T = TypeVar("T")


class WarehouseConflictError(Exception):
    """A warehouse file kept changing under this transform past the retry budget."""


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


class WarehouseSink(Protocol):
    """Somewhere else the warehouse rows go (a PostgreSQL warehouse), after the Parquet."""

    def upsert(self, table: WarehouseTable, rows: Sequence[Row]) -> None: ...

    def replace(self, table: WarehouseTable, rows: Sequence[Row]) -> None: ...


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
        self.conflict_retries = conflict_retries

    # ---- incremental -------------------------------------------------------------------

    def apply(self, change: SourceChange) -> TransformReport:
        spec = self._spec(change.table)
        report = TransformReport()
        fact = FACT_BY_SOURCE.get(spec.name)
        if fact is not None:
            versions: list[RowModel] = []
            if change.history_key:
                versions += [h.row for h in read_history(self.store, spec, change.history_key)]
            latest = read_latest(self.store, spec).rows
            key = spec.primary_key
            versions += [r for r in latest if change.keys is None or getattr(r, key) in change.keys]
            rows = fact_rows(spec.name, versions)
            self._add_facts(fact, rows, report)
            self._widen_dates(fact_dates(rows, fact), report)
        for dimension in dimensions_of(spec.name):
            self._refresh_dimension(dimension, report)
        return report

    def updated_event(self, change: SourceChange, report: TransformReport) -> WarehouseUpdated:
        return WarehouseUpdated(
            event_id=event_id(WarehouseUpdated.detail_type(), change.cause),
            cause=change.cause,
            source_table=change.table,
            batch=change.batch,
            tables=dict(sorted(report.tables.items())),
        )

    # A retry after a crash finds the Parquet already written; so the manifest and the sink
    # are brought up to date whether or not this attempt changed a file (both are idempotent).

    def _add_facts(
        self, table: WarehouseTable, rows: Sequence[Row], report: TransformReport
    ) -> None:
        by_partition: dict[str, list[Row]] = defaultdict(list)
        for row in rows:
            by_partition[partition_month(row)].append(row)
        counts: dict[str, int] = {}
        for partition, new_rows in sorted(by_partition.items()):
            key = warehouse_file_key(table.name, partition)
            added, total = self._retry(partial(self._union_file, table, key, new_rows))
            counts[key] = total
            report.add(table.name, len(added))
            if added:
                report.files_written.append(key)
            if self.sink is not None:
                self.sink.upsert(table, new_rows)
        self._retry(lambda: self._update_manifest(table, counts))

    def _union_file(
        self, table: WarehouseTable, key: str, rows: Sequence[Row]
    ) -> tuple[list[Row], int]:
        """Add the rows whose record ids the file lacks; (rows added, rows in the file)."""
        found = self.store.get_if_exists(key)
        existing = parquet.decode(table, found.data) if found else []
        have = {r[table.key] for r in existing}
        added = [r for r in rows if r[table.key] not in have]
        if added:
            merged = sort_rows(table, [*existing, *added])
            self._put(key, parquet.encode(table, merged), found.etag if found else None)
        return added, len(existing) + len(added)

    def _widen_dates(self, dates: set[date], report: TransformReport) -> None:
        if not dates:
            return
        key = warehouse_file_key(DIM_DATE.name)

        def attempt() -> tuple[list[Row], bool]:
            found = self.store.get_if_exists(key)
            days = [r["date_id"] for r in parquet.decode(DIM_DATE, found.data)] if found else []
            first, last = min([*days, *dates]), max([*days, *dates])
            rows = dim_date(first, last)
            if days and (first, last) == (days[0], days[-1]):
                return rows, False
            self._put(key, parquet.encode(DIM_DATE, rows), found.etag if found else None)
            return rows, True

        rows, changed = self._retry(attempt)
        report.add(DIM_DATE.name, len(rows) if changed else 0)
        if changed:
            report.files_written.append(key)
        if self.sink is not None:
            self.sink.replace(DIM_DATE, rows)
        self._retry(lambda: self._update_manifest(DIM_DATE, {key: len(rows)}))

    def _refresh_dimension(self, table: WarehouseTable, report: TransformReport) -> None:
        key = warehouse_file_key(table.name)

        def attempt() -> tuple[list[Row], bool, bool]:
            """(rows, whether the file exists now, whether this attempt wrote it)."""
            # Read the file's ETag before latest: a write based on an older latest than
            # another transform's then fails its condition and is redone.
            found = self.store.get_if_exists(key)
            rows = build_dimension(table, self._latest(table.sources), self._deleted(table.sources))
            data = parquet.encode(table, rows)
            if found is not None and found.data == data:
                return rows, True, False
            if found is None and not rows:
                return rows, False, False
            self._put(key, data, found.etag if found else None)
            return rows, True, True

        rows, exists, changed = self._retry(attempt)
        report.add(table.name, len(rows) if changed else 0)
        if changed:
            report.files_written.append(key)
        if not exists:
            return
        if self.sink is not None:
            self.sink.replace(table, rows)
        self._retry(lambda: self._update_manifest(table, {key: len(rows)}))

    # ---- rebuild -----------------------------------------------------------------------

    def rebuild(self) -> TransformReport:
        """Every warehouse table from latest + history, replacing what is there."""
        report = TransformReport()
        dates: set[date] = set()
        for fact in FACTS:
            assert fact.fact_of is not None
            spec = self._spec(fact.fact_of)
            versions: list[RowModel] = list(read_latest(self.store, spec).rows)
            for _, history in iter_history(self.store, spec):
                versions += [h.row for h in history]
            rows = fact_rows(spec.name, versions)
            dates |= fact_dates(rows, fact)
            by_partition: dict[str, list[Row]] = defaultdict(list)
            for row in rows:
                by_partition[partition_month(row)].append(row)
            files = {
                warehouse_file_key(fact.name, p): sort_rows(fact, r)
                for p, r in by_partition.items()
            }
            self._replace_table(fact, files, report)
        if dates:
            date_rows = dim_date(min(dates), max(dates))
            self._replace_table(DIM_DATE, {warehouse_file_key(DIM_DATE.name): date_rows}, report)
        latest = self._latest(sorted({s for d in SOURCE_DIMENSIONS for s in d.sources}))
        deleted = self._deleted(sorted({s for d in SOURCE_DIMENSIONS for s in d.sources}))
        for dimension in SOURCE_DIMENSIONS:
            rows = build_dimension(dimension, latest, deleted)
            files = {warehouse_file_key(dimension.name): rows} if rows else {}
            self._replace_table(dimension, files, report)
        return report

    def rebuild_event(self, report: TransformReport) -> WarehouseUpdated:
        digest = hashlib.sha256(json.dumps(sorted(report.tables.items())).encode()).hexdigest()
        cause = f"rebuild:{digest[:16]}"
        return WarehouseUpdated(
            event_id=event_id(WarehouseUpdated.detail_type(), cause),
            cause=cause,
            tables=dict(sorted(report.tables.items())),
        )

    def _replace_table(
        self, table: WarehouseTable, files: Mapping[str, list[Row]], report: TransformReport
    ) -> None:
        for key, rows in sorted(files.items()):
            data = parquet.encode(table, rows)
            found = self.store.get_if_exists(key)
            if found is None or found.data != data:
                self.store.put(key, data, content_type=PARQUET)
                report.files_written.append(key)
            report.add(table.name, len(rows))
        stale = [
            k
            for k in self.store.keys(warehouse_prefix(table.name))
            if k.endswith(".parquet") and k not in files
        ]
        for key in stale:
            self.store.delete(key)
        if self.sink is not None:
            self.sink.replace(table, [r for _, rows in sorted(files.items()) for r in rows])
        manifest = manifest_bytes(table, {k: len(r) for k, r in files.items()})
        manifest_key = warehouse_manifest_key(table.name)
        found = self.store.get_if_exists(manifest_key)
        if files and (found is None or found.data != manifest):
            self.store.put(manifest_key, manifest)
        elif not files and found is not None:
            self.store.delete(manifest_key)

    # ---- reading the warehouse ---------------------------------------------------------

    def read_table(self, name: str) -> list[Row]:
        """Every row of a warehouse table, in file order (tests, the demo, the loader)."""
        table = WAREHOUSE_TABLES[name]
        found = self.store.get_if_exists(warehouse_manifest_key(name))
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

    def _update_manifest(self, table: WarehouseTable, counts: Mapping[str, int]) -> None:
        key = warehouse_manifest_key(table.name)
        found = self.store.get_if_exists(key)
        files: dict[str, int] = json.loads(found.data)["files"] if found else {}
        merged = {**files, **counts}
        if found is not None and merged == files:
            return
        self._put(key, manifest_bytes(table, merged), found.etag if found else None)

    def _put(self, key: str, data: bytes, etag: str | None) -> None:
        """Create (only if absent) or replace (only if unchanged since read at `etag`)."""
        kind = PARQUET if key.endswith(".parquet") else "application/json"
        if etag is None:
            self.store.put(key, data, create_only=True, content_type=kind)
        else:
            self.store.put(key, data, if_match=etag, content_type=kind)

    def _retry(self, attempt: Callable[[], T]) -> T:
        for _ in range(self.conflict_retries):
            try:
                return attempt()
            except PreconditionFailedError:
                continue
        raise WarehouseConflictError(
            f"warehouse files kept changing; gave up after {self.conflict_retries} attempts"
        )


PARQUET = "application/vnd.apache.parquet"


def manifest_bytes(table: WarehouseTable, files: Mapping[str, int]) -> bytes:
    """The manifest of a table's current files: deterministic JSON."""
    body = {
        "table": table.name,
        "kind": "fact" if table.is_fact else "dimension",
        "files": dict(sorted(files.items())),
        "rows": sum(files.values()),
    }
    return (json.dumps(body, indent=1, sort_keys=True) + "\n").encode()
