"""One ingest run: every registry table, from the source into baseline or staging files.

Per table:
- no watermark state yet: read it all, write `baseline/<table>.json`;
- otherwise read the rows with `last_updated` > watermark - overlap and stage those not already
  staged (`recent` remembers the rows of the overlap window by their canonical content);
- reconcile tables are read whole and compared with `latest`: rows that changed without a new
  `last_updated` are staged too, keys gone from the source are reported (latest keeps them).
The watermark is the greatest `last_updated` read (never the clock) and is saved only after
the file is written: a crash in between means a re-read, never a gap. Every file written
carries `observed-at` metadata: the database's time of the read (the merge orders versions by
it, shared/observation.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Literal

from aws_lambda_powertools import Logger
from pydantic import BaseModel, ConfigDict

from services.ingest.pause import ScheduleState, pause_reason
from services.ingest.source import SourceUnavailableError, TableSource
from shared.events import EventSink, RowsMissingAtSource
from shared.layout import baseline_key, staging_key, state_key
from shared.observation import observed_at_metadata
from shared.reader import read_latest
from shared.rows import FileFormatError, RowProblem, dump_rows, row_json, validate_rows
from shared.schemas import RowModel
from shared.storage import BucketStore
from shared.tables import TABLES, TableSpec
from shared.types import Timestamp

logger = Logger(service="ingest")

_PROBLEMS_SHOWN = 10


def watermark_key(table: str) -> str:
    return state_key("ingest", f"{table}.json")


class TableState(BaseModel):
    """What the ingest remembers of one table between runs (`_state/ingest/<table>.json`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    table: str
    # The greatest last_updated ever read; None while the table has had no rows.
    watermark: Timestamp | None
    # Rows inside the overlap window (last_updated > watermark - overlap) as staged: key →
    # digest of the canonical row. A re-read of the window stages only what differs.
    recent: dict[int, str]


class TableResult(BaseModel):
    table: str
    action: Literal["baseline", "staging", "failed"]
    key: str | None = None
    rows_read: int = 0
    rows_written: int = 0
    silent_edits: int = 0
    missing_at_source: list[int] = []
    watermark: str | None = None
    error: str | None = None


class IngestReport(BaseModel):
    paused: str | None = None
    tables: list[TableResult] = []

    @property
    def ok(self) -> bool:
        return all(t.action != "failed" for t in self.tables)

    @property
    def failures(self) -> list[TableResult]:
        return [t for t in self.tables if t.action == "failed"]

    def summary(self) -> str:
        if self.paused:
            return f"paused, nothing read: {self.paused}"
        parts = [
            f"{t.table}: {t.action}" + (f" {t.rows_written} rows" if t.action != "failed" else "")
            for t in self.tables
        ]
        return "; ".join(parts)


class TableDataError(ValueError):
    """Rows of the source that their table's schema rejects: the table is stopped."""

    def __init__(self, table: str, problems: list[RowProblem]) -> None:
        shown = "\n  ".join(str(p) for p in problems[:_PROBLEMS_SHOWN])
        more = len(problems) - _PROBLEMS_SHOWN
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(
            f"table {table}: {len(problems)} problem(s) in the source, nothing written, "
            f"watermark kept:\n  {shown}{tail}"
        )
        self.problems = problems


def digest(spec: TableSpec, row: RowModel) -> str:
    return hashlib.sha256(row_json(spec, row).encode()).hexdigest()[:32]


def key_of(spec: TableSpec, row: RowModel) -> int:
    key: int = getattr(row, spec.primary_key)
    return key


def next_state(
    spec: TableSpec, previous: datetime | None, rows: Iterable[RowModel], overlap: timedelta
) -> TableState:
    """The state after a run that read `rows` (every row of the new overlap window)."""
    rows = list(rows)
    watermark = max([r.last_updated for r in rows] + ([previous] if previous else []), default=None)
    recent: dict[int, str] = {}
    if watermark is not None:
        window_start = watermark - overlap
        recent = {key_of(spec, r): digest(spec, r) for r in rows if r.last_updated > window_start}
    return TableState(table=spec.name, watermark=watermark, recent=recent)


class Ingest:
    """Runs the ingest of the registry tables against one source, bucket and event bus."""

    def __init__(
        self,
        source: TableSource,
        store: BucketStore,
        publisher: EventSink,
        *,
        overlap: timedelta,
    ) -> None:
        self.source = source
        self.store = store
        self.publisher = publisher
        self.overlap = overlap

    def _where(self, key: str) -> str:
        return f"s3://{self.store.bucket}/{key}"

    def _read(self, spec: TableSpec, since: datetime | None) -> tuple[list[RowModel], datetime]:
        """The table's rows (validated) and the database's time of the read."""
        read = self.source.read(spec, since)
        report = validate_rows(spec, read.rows, f"postgresql:{spec.name}")
        if report.problems:
            raise TableDataError(spec.name, report.problems)
        return report.rows, read.read_at

    def _load_state(self, spec: TableSpec) -> TableState | None:
        stored = self.store.get_if_exists(watermark_key(spec.name))
        return None if stored is None else TableState.model_validate_json(stored.data)

    def _save_state(self, state: TableState) -> None:
        self.store.put(watermark_key(state.table), state.model_dump_json(indent=1).encode())

    def table(self, spec: TableSpec) -> TableResult:
        state = self._load_state(spec)
        if state is None:
            return self._baseline(spec)
        return self._staging(spec, state)

    def _baseline(self, spec: TableSpec) -> TableResult:
        rows, read_at = self._read(spec, None)
        key = baseline_key(spec.name)
        self.store.put(key, dump_rows(spec, rows), metadata=observed_at_metadata(read_at))
        state = next_state(spec, None, rows, self.overlap)
        self._save_state(state)  # only now: a crash before this re-reads the whole table
        logger.info("baseline written", extra={"table": spec.name, "key": key, "rows": len(rows)})
        return _result(spec, "baseline", key, rows, rows, state)

    def _staging(self, spec: TableSpec, state: TableState) -> TableResult:
        window_start = None if state.watermark is None else state.watermark - self.overlap
        # Reconcile tables are read whole; the others from the start of the overlap window.
        rows, read_at = self._read(spec, None if spec.reconcile else window_start)
        changed: dict[int, RowModel] = {}
        for row in rows:
            in_window = window_start is None or row.last_updated > window_start
            if in_window and state.recent.get(key_of(spec, row)) != digest(spec, row):
                changed[key_of(spec, row)] = row
        silent: list[RowModel] = []
        missing: list[int] = []
        if spec.reconcile:
            silent, missing = self._reconcile(spec, rows, changed)
            changed.update((key_of(spec, r), r) for r in silent)
        staged = [changed[k] for k in sorted(changed)]
        key = staging_key(spec.name)
        self.store.put(key, dump_rows(spec, staged), metadata=observed_at_metadata(read_at))
        if missing:
            logger.warning(
                "rows missing at source",
                extra={"table": spec.name, "count": len(missing), "keys": missing[:20]},
            )
            self.publisher.publish([RowsMissingAtSource.of(spec.name, missing)])
        new_state = next_state(spec, state.watermark, rows, self.overlap)
        if new_state != state:
            self._save_state(new_state)  # only after the staging file is written
        logger.info(
            "staging written",
            extra={
                "table": spec.name,
                "key": key,
                "rows_read": len(rows),
                "rows_staged": len(staged),
                "silent_edits": len(silent),
            },
        )
        result = _result(spec, "staging", key, rows, staged, new_state)
        return result.model_copy(update={"silent_edits": len(silent), "missing_at_source": missing})

    def _reconcile(
        self, spec: TableSpec, rows: list[RowModel], changed: Mapping[int, RowModel]
    ) -> tuple[list[RowModel], list[int]]:
        """Rows that differ from latest though not changed by last_updated; keys gone."""
        try:
            snapshot = read_latest(self.store, spec)
            problems = []
        except FileFormatError as exc:
            snapshot, problems = None, [str(exc)]
        if snapshot is None or problems:
            # The merge owns latest and will stop on it too; reconcile later, stage as usual.
            logger.error(
                "latest unreadable, reconcile skipped",
                extra={"table": spec.name, "problems": problems},
            )
            return [], []
        if not snapshot.exists:
            return [], []  # nothing merged yet: the baseline or staging will make latest
        latest = {key_of(spec, r): row_json(spec, r) for r in snapshot.rows}
        silent = [
            r
            for r in rows
            if key_of(spec, r) not in changed and latest.get(key_of(spec, r)) != row_json(spec, r)
        ]
        source_keys = {key_of(spec, r) for r in rows}
        missing = sorted(k for k in latest if k not in source_keys)
        return silent, missing


def _result(
    spec: TableSpec,
    action: Literal["baseline", "staging"],
    key: str,
    read: list[RowModel],
    written: list[RowModel],
    state: TableState,
) -> TableResult:
    watermark = None if state.watermark is None else state.watermark.isoformat()
    return TableResult(
        table=spec.name,
        action=action,
        key=key,
        rows_read=len(read),
        rows_written=len(written),
        watermark=watermark,
    )


def run_ingest(
    source: TableSource,
    store: BucketStore,
    publisher: EventSink,
    *,
    overlap: timedelta,
    schedule: ScheduleState | None = None,
    tables: Iterable[TableSpec] = TABLES.values(),
) -> IngestReport:
    """One ingest run of every registry table; a failing table does not stop the others."""
    reason = pause_reason(store, schedule)
    if reason:
        logger.warning("ingest paused, nothing read", extra={"reason": reason})
        return IngestReport(paused=reason)
    ingest = Ingest(source, store, publisher, overlap=overlap)
    results: list[TableResult] = []
    pending = list(tables)
    for index, spec in enumerate(pending):
        try:
            results.append(ingest.table(spec))
        except SourceUnavailableError as exc:
            # Every table would wait for the same dead connection: stop reading, fail them all.
            logger.error("source unavailable", extra={"error": str(exc)})
            results.extend(
                TableResult(table=s.name, action="failed", error=f"table {s.name}: {exc}")
                for s in pending[index:]
            )
            break
        except TableDataError as exc:
            logger.error(str(exc), extra={"table": spec.name, "stopped": "bad rows in the source"})
            results.append(TableResult(table=spec.name, action="failed", error=str(exc)))
        except Exception as exc:  # one table's trouble must not hold the others back
            logger.exception("table failed", extra={"table": spec.name})
            error = f"table {spec.name}: {type(exc).__name__}: {exc}"
            results.append(TableResult(table=spec.name, action="failed", error=error))
    report = IngestReport(tables=results)
    if not report.ok:
        logger.error("ingest run failed", extra={"failed": [t.table for t in report.failures]})
    return report
