"""One ingest run: every registry table, from the source into baseline or staging files.

Per table:
- no watermark state yet: read it all, write `baseline/<table>.json`;
- otherwise read the rows with `last_updated` >= watermark - overlap and stage those not
  already staged (`recent` remembers the rows of the overlap window by their canonical content);
- reconcile tables are read whole and compared with `latest`: rows that changed without a new
  `last_updated` are staged too, keys gone from the source are reported (RowsMissingAtSource)
  and, where the table infers deletes (`TableSpec.infers_deletes`, the default for reconciled
  tables), staged as deletes: the merge takes them out of latest, into history;
- log-mode tables are read from the replication slot instead (services/ingest/log_ingest.py).
The watermark is the greatest `last_updated` read, but never past the database's own clock at
the read (the same transaction's `clock_timestamp()`): a row stamped in the future is staged,
and re-read (and deduped by `recent`) until the clock passes it, instead of pushing the
watermark past the rows written after it. It is saved only after the file is written: a crash
in between means a re-read, never a gap. Every file written carries `observed-at` metadata:
the database's time of the read (the merge orders versions by it, shared/observation.py).

Rows stream: a server-side cursor gives a page at a time, each row is validated, compared and
written as it comes, and a large file goes up in parts (`BucketStore.put_stream`), so memory
follows a page, not the table. A rejected row aborts the upload: nothing is written. The
reconcile tables (small) are the exception: read whole, as they are compared with latest.
The pause is checked before each table: a pause written during a run stops the tables not
yet read (`IngestReport.skipped`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Literal, NamedTuple, Protocol

from aws_lambda_powertools import Logger
from pydantic import BaseModel, ConfigDict

from services.ingest.lines import tombstone_line
from services.ingest.logical import SlotHealth
from services.ingest.pause import ScheduleState, pause_reason
from services.ingest.source import PAGE_ROWS, Row, SourceUnavailableError, TableSource
from shared.events import EventSink, RowsMissingAtSource
from shared.layout import baseline_key, staging_key, state_key
from shared.observation import observed_at_metadata
from shared.reader import read_latest
from shared.rows import (
    FileFormatError,
    RowProblem,
    ValidationReport,
    dump_lines,
    row_json,
    validate_rows,
)
from shared.schema_state import effective_spec, with_columns
from shared.schemas import RowModel
from shared.storage import PART_BYTES, BucketStore
from shared.tables import TABLES, TableSpec
from shared.types import Timestamp

logger = Logger(service="ingest")

_PROBLEMS_SHOWN = 10
# A table whose every row is bad must not fill memory with its report: count them all, keep these.
_PROBLEMS_KEPT = 1000
# Rows per piece of a streamed file (the pieces are joined into parts of PART_BYTES).
_LINES_PER_CHUNK = 500


def watermark_key(table: str) -> str:
    return state_key("ingest", f"{table}.json")


class TableState(BaseModel):
    """What the ingest remembers of one table between runs (`_state/ingest/<table>.json`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    table: str
    # The greatest last_updated ever read, capped at the database's clock of the read that
    # saw it; None while the table has had no rows.
    watermark: Timestamp | None
    # Rows inside the overlap window (last_updated >= watermark - overlap) as staged: key →
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
    # Paused before the first table: nothing was read.
    paused: str | None = None
    # A pause found between two tables: the tables before it were read, `skipped` were not.
    stopped_by_pause: str | None = None
    skipped: list[str] = []
    tables: list[TableResult] = []
    # The replication slot after a run with log-mode tables (services/ingest/log_ingest.py).
    slot: SlotHealth | None = None

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
        if self.stopped_by_pause:
            parts.append(f"paused, not read: {', '.join(self.skipped)} ({self.stopped_by_pause})")
        return "; ".join(parts)


class TableDataError(ValueError):
    """Rows of the source that their table's schema rejects: the table is stopped."""

    def __init__(self, table: str, problems: list[RowProblem], total: int | None = None) -> None:
        total = len(problems) if total is None else total
        shown = "\n  ".join(str(p) for p in problems[:_PROBLEMS_SHOWN])
        more = total - min(len(problems), _PROBLEMS_SHOWN)
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(
            f"table {table}: {total} problem(s) in the source, nothing written, "
            f"watermark kept:\n  {shown}{tail}"
        )
        self.problems = problems
        self.total = total


def line_digest(line: str) -> str:
    return hashlib.sha256(line.encode()).hexdigest()[:32]


def digest(spec: TableSpec, row: RowModel) -> str:
    return line_digest(row_json(spec, row))


def key_of(spec: TableSpec, row: RowModel) -> int:
    key: int = getattr(row, spec.primary_key)
    return key


def clock_of(read_at: datetime) -> datetime:
    """The database's clock of a read as `last_updated` is written: a naive UTC timestamp.
    A source stamping local time east of UTC (London in summer) looks ahead of it, and so is
    capped too: its rows are re-read, never skipped, across the autumn clock change."""
    return read_at.astimezone(UTC).replace(tzinfo=None) if read_at.tzinfo else read_at


def capped_watermark(
    previous: datetime | None, greatest: datetime | None, clock: datetime
) -> datetime | None:
    """The watermark after a read: the greatest `last_updated` seen, not past the clock."""
    seen = [t for t in (previous, greatest) if t is not None]
    return min(max(seen), clock) if seen else None


class SourceRows(NamedTuple):
    """Rows read whole, and the spec they were validated with (the table's columns)."""

    spec: TableSpec
    rows: list[RowModel]


class Entry(NamedTuple):
    """One valid row of a read, with its canonical line and that line's digest."""

    key: int
    row: RowModel
    line: str
    digest: str


class WindowTracker:
    """Follows the rows of one read to the table's next state, keeping only the rows that can
    still fall inside the final overlap window (the window's start only moves forward as the
    greatest `last_updated` grows): memory follows the window, not the table."""

    _PRUNE_AT = 1024

    def __init__(
        self, spec: TableSpec, previous: datetime | None, read_at: datetime, overlap: timedelta
    ) -> None:
        self.spec = spec
        self.previous = previous
        self.clock = clock_of(read_at)
        self.overlap = overlap
        self.greatest: datetime | None = None
        self.rows = 0
        self._floor = self._window_start()
        self._kept: dict[int, tuple[datetime, str]] = {}
        self._prune_at = self._PRUNE_AT

    def _window_start(self) -> datetime | None:
        watermark = capped_watermark(self.previous, self.greatest, self.clock)
        return None if watermark is None else watermark - self.overlap

    def see(self, entry: Entry) -> None:
        self.rows += 1
        stamp: datetime = entry.row.last_updated
        if self.greatest is None or stamp > self.greatest:
            self.greatest = stamp
            self._floor = self._window_start()
        if self._floor is None or stamp >= self._floor:
            self._kept[entry.key] = (stamp, entry.digest)
            if len(self._kept) >= self._prune_at:
                self._kept = self._within(self._floor)
                self._prune_at = max(2 * len(self._kept), self._PRUNE_AT)

    def _within(self, start: datetime | None) -> dict[int, tuple[datetime, str]]:
        return {k: v for k, v in self._kept.items() if start is None or v[0] >= start}

    def state(self) -> TableState:
        watermark = capped_watermark(self.previous, self.greatest, self.clock)
        recent: dict[int, str] = {}
        if watermark is not None:
            recent = {k: d for k, (_, d) in self._within(watermark - self.overlap).items()}
        return TableState(table=self.spec.name, watermark=watermark, recent=recent)


def next_state(
    spec: TableSpec,
    previous: datetime | None,
    rows: Iterable[RowModel],
    overlap: timedelta,
    *,
    read_at: datetime,
) -> TableState:
    """The state after a read at `read_at` (the database's clock) that gave `rows` (every row
    of the new overlap window)."""
    tracker = WindowTracker(spec, previous, read_at, overlap)
    for row in rows:
        line = row_json(spec, row)
        tracker.see(Entry(key_of(spec, row), row, line, line_digest(line)))
    return tracker.state()


def file_chunks(lines: Iterable[str]) -> Iterator[bytes]:
    """`shared.rows.dump_lines`'s bytes, in pieces, from lines as they come."""
    batch: list[str] = []
    opening = "[\n"
    for line in lines:
        batch.append(opening + line)
        opening = ",\n"
        if len(batch) >= _LINES_PER_CHUNK:
            yield "".join(batch).encode("utf-8")
            batch.clear()
    if opening == "[\n":  # no line at all
        yield b"[]\n"
        return
    batch.append("\n]\n")
    yield "".join(batch).encode("utf-8")


class Scan:
    """One streamed read of a table: the valid rows as entries, every problem counted (the
    first `_PROBLEMS_KEPT` kept), and the next state followed as the rows pass."""

    def __init__(self, spec: TableSpec, tracker: WindowTracker) -> None:
        self.spec = spec
        self.tracker = tracker
        self.source = f"postgresql:{spec.name}"
        self.problems: list[RowProblem] = []
        self.total_problems = 0

    def entries(self, pages: Iterable[list[Row]]) -> Iterator[Entry]:
        """Valid rows as they come; after a bad one, nothing more (the rest is still checked,
        for the report), and at the end TableDataError: the file being written is abandoned."""
        offset = 0
        for page in pages:
            valid = self._check(validate_rows(self.spec, page, self.source), offset)
            offset += len(page)
            if self.total_problems:
                continue
            for row in valid:
                line = row_json(self.spec, row)
                entry = Entry(key_of(self.spec, row), row, line, line_digest(line))
                self.tracker.see(entry)
                yield entry
        if self.total_problems:
            raise TableDataError(self.spec.name, self.problems, self.total_problems)

    def _check(self, report: ValidationReport, offset: int) -> list[RowModel]:
        """The page's valid rows; its problems noted, indexed from the table's first row."""
        self.total_problems += len(report.problems)
        room = _PROBLEMS_KEPT - len(self.problems)
        self.problems += [
            p.model_copy(update={"row_index": p.row_index + offset})
            for p in report.problems[: max(room, 0)]
        ]
        return report.rows


class Counted:
    """Lines passing to a file, counted."""

    def __init__(self) -> None:
        self.count = 0

    def lines(self, entries: Iterable[Entry]) -> Iterator[str]:
        for entry in entries:
            self.count += 1
            yield entry.line


class Ingest:
    """Runs the ingest of the registry tables against one source, bucket and event bus."""

    def __init__(
        self,
        source: TableSource,
        store: BucketStore,
        publisher: EventSink,
        *,
        overlap: timedelta,
        page_rows: int = PAGE_ROWS,
        part_bytes: int = PART_BYTES,
    ) -> None:
        self.source = source
        self.store = store
        self.publisher = publisher
        self.overlap = overlap
        self.page_rows = page_rows
        self.part_bytes = part_bytes

    def _read(self, spec: TableSpec, since: datetime | None) -> tuple[SourceRows, datetime]:
        """The table's rows (validated), whole, and the database's time of the read."""
        read = self.source.read(spec, since)
        spec = with_columns(spec, read.extra_columns)
        report = validate_rows(spec, read.rows, f"postgresql:{spec.name}")
        if report.problems:
            raise TableDataError(spec.name, report.problems)
        return SourceRows(spec, report.rows), read.read_at

    def _load_state(self, spec: TableSpec) -> TableState | None:
        stored = self.store.get_if_exists(watermark_key(spec.name))
        return None if stored is None else TableState.model_validate_json(stored.data)

    def _save_state(self, state: TableState) -> None:
        self.store.put(watermark_key(state.table), state.model_dump_json(indent=1).encode())

    def _write(self, key: str, lines: Iterable[str], read_at: datetime) -> None:
        self.store.put_stream(
            key,
            file_chunks(lines),
            metadata=observed_at_metadata(read_at),
            part_bytes=self.part_bytes,
        )

    def has_state(self, spec: TableSpec) -> bool:
        """Whether the table has been read before (else its next read is its baseline)."""
        return self._load_state(spec) is not None

    def table(self, spec: TableSpec) -> TableResult:
        spec = effective_spec(self.store, spec)  # latest's rows may hold added columns
        state = self._load_state(spec)
        if state is None:
            return self._baseline(spec)
        if spec.reconcile:
            return self._reconciled_staging(spec, state)
        return self._staging(spec, state)

    def _baseline(self, spec: TableSpec) -> TableResult:
        key = baseline_key(spec.name)
        with self.source.pages(spec, None, page_rows=self.page_rows) as read:
            spec = with_columns(spec, read.extra_columns)
            scan = Scan(spec, WindowTracker(spec, None, read.read_at, self.overlap))
            self._write(key, (e.line for e in scan.entries(read.pages)), read.read_at)
        state = scan.tracker.state()
        self._save_state(state)  # only now: a crash before this re-reads the whole table
        rows = scan.tracker.rows
        logger.info("baseline written", extra={"table": spec.name, "key": key, "rows": rows})
        return _result(spec, "baseline", key, rows, rows, state)

    def _staging(self, spec: TableSpec, state: TableState) -> TableResult:
        """A table that is not reconciled: the overlap window's rows, streamed."""
        window_start = None if state.watermark is None else state.watermark - self.overlap
        key = staging_key(spec.name)
        staged = Counted()
        with self.source.pages(spec, window_start, page_rows=self.page_rows) as read:
            spec = with_columns(spec, read.extra_columns)
            scan = Scan(spec, WindowTracker(spec, state.watermark, read.read_at, self.overlap))
            changed = (e for e in scan.entries(read.pages) if state.recent.get(e.key) != e.digest)
            self._write(key, staged.lines(changed), read.read_at)
        new_state = scan.tracker.state()
        if new_state != state:
            self._save_state(new_state)  # only after the staging file is written
        _log_staging(spec, key, scan.tracker.rows, staged.count, 0)
        return _result(spec, "staging", key, scan.tracker.rows, staged.count, new_state)

    def _reconciled_staging(self, spec: TableSpec, state: TableState) -> TableResult:
        """A reconcile table: read whole and compared with latest (small, so in memory)."""
        window_start = None if state.watermark is None else state.watermark - self.overlap
        (spec, rows), read_at = self._read(spec, None)
        changed: dict[int, RowModel] = {}
        for row in rows:
            in_window = window_start is None or row.last_updated >= window_start
            if in_window and state.recent.get(key_of(spec, row)) != digest(spec, row):
                changed[key_of(spec, row)] = row
        silent, missing = self._reconcile(spec, rows, changed)
        changed.update((key_of(spec, r), r) for r in silent)
        staged = [changed[k] for k in sorted(changed)]
        key = staging_key(spec.name)
        lines = [row_json(spec, row) for row in staged]
        if spec.infers_deletes:  # the merge takes each key out of latest, into history
            lines += [tombstone_line(spec, k, clock_of(read_at)) for k in missing]
        self.store.put(key, dump_lines(lines), metadata=observed_at_metadata(read_at))
        if missing:
            logger.warning(
                "rows missing at source",
                extra={"table": spec.name, "count": len(missing), "keys": missing[:20]},
            )
            self.publisher.publish([RowsMissingAtSource.of(spec.name, missing)])
        new_state = next_state(spec, state.watermark, rows, self.overlap, read_at=read_at)
        if new_state != state:
            self._save_state(new_state)  # only after the staging file is written
        _log_staging(spec, key, len(rows), len(staged), len(silent))
        result = _result(spec, "staging", key, len(rows), len(staged), new_state)
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


def _log_staging(spec: TableSpec, key: str, read: int, staged: int, silent: int) -> None:
    logger.info(
        "staging written",
        extra={
            "table": spec.name,
            "key": key,
            "rows_read": read,
            "rows_staged": staged,
            "silent_edits": silent,
        },
    )


def _result(
    spec: TableSpec,
    action: Literal["baseline", "staging"],
    key: str,
    read: int,
    written: int,
    state: TableState,
) -> TableResult:
    watermark = None if state.watermark is None else state.watermark.isoformat()
    return TableResult(
        table=spec.name,
        action=action,
        key=key,
        rows_read=read,
        rows_written=written,
        watermark=watermark,
    )


def failed_result(spec: TableSpec, exc: Exception) -> TableResult:
    """The result of a table that raised (logged; called inside the `except`)."""
    if isinstance(exc, TableDataError):
        logger.error(str(exc), extra={"table": spec.name, "stopped": "bad rows in the source"})
        return TableResult(table=spec.name, action="failed", error=str(exc))
    logger.exception("table failed", extra={"table": spec.name})
    error = f"table {spec.name}: {type(exc).__name__}: {exc}"
    return TableResult(table=spec.name, action="failed", error=error)


class LogCapture(Protocol):
    """The log-mode part of a run (services/ingest/log_ingest.py): which tables it takes, and
    a run of them, their baselines read by `ingest`."""

    @property
    def tables(self) -> frozenset[str]: ...

    def run(
        self, ingest: Ingest, specs: list[TableSpec]
    ) -> tuple[list[TableResult], SlotHealth | None]: ...


def run_ingest(
    source: TableSource,
    store: BucketStore,
    publisher: EventSink,
    *,
    overlap: timedelta,
    schedule: ScheduleState | None = None,
    tables: Iterable[TableSpec] = TABLES.values(),
    page_rows: int = PAGE_ROWS,
    part_bytes: int = PART_BYTES,
    log: LogCapture | None = None,
) -> IngestReport:
    """One ingest run of every registry table; a failing table does not stop the others, a
    pause (checked before each table, and before the log) stops the ones not yet read. The
    log-mode tables (`log`) are read after the polled ones."""
    pending = list(tables)
    reason = pause_reason(store, schedule)
    if reason:
        logger.warning("ingest paused, nothing read", extra={"reason": reason})
        return IngestReport(paused=reason, skipped=[s.name for s in pending])
    ingest = Ingest(
        source, store, publisher, overlap=overlap, page_rows=page_rows, part_bytes=part_bytes
    )
    logged = [s for s in pending if log is not None and s.name in log.tables]
    report = _poll(ingest, [s for s in pending if s not in logged], store, schedule)
    if log is None or not logged or report.stopped_by_pause:
        return _finished(report)
    reason = pause_reason(store, schedule)
    if reason:
        skipped = [s.name for s in logged]
        report = report.model_copy(update={"stopped_by_pause": reason, "skipped": skipped})
        return _finished(report)
    results, slot = log.run(ingest, logged)
    done = [*report.tables, *results]
    return _finished(report.model_copy(update={"tables": done, "slot": slot}))


def _poll(
    ingest: Ingest, pending: list[TableSpec], store: BucketStore, schedule: ScheduleState | None
) -> IngestReport:
    """The polled tables, one after the other, the pause checked between them."""
    results: list[TableResult] = []
    for index, spec in enumerate(pending):
        reason = pause_reason(store, schedule) if index else None
        if reason:
            skipped = [s.name for s in pending[index:]]
            logger.warning(
                "ingest paused during the run", extra={"reason": reason, "skipped": skipped}
            )
            return IngestReport(stopped_by_pause=reason, skipped=skipped, tables=results)
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
        except Exception as exc:  # one table's trouble must not hold the others back
            results.append(failed_result(spec, exc))
    return IngestReport(tables=results)


def _finished(report: IngestReport) -> IngestReport:
    if not report.ok:
        logger.error("ingest run failed", extra={"failed": [t.table for t in report.failures]})
    return report
