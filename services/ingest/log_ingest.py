"""Log-mode tables: every committed change, from the replication slot, staged in commit order.

For the tables whose capture is "log" (the registry, or LOG_CAPTURE_TABLES), one run:
1. `ensure_slot()` first, so that a baseline read after it misses nothing (the handoff: a
   change committed between the two is in both, and the merge absorbs it, same version or
   older);
2. each log table the ingest has no state for yet: its baseline, read as polling reads it;
3. `upto = current_lsn()`, then page by page (`logical.consume`): the page's changes of each
   table into `staging/<table>.json`, every change in commit order (two edits of one key are
   two versions; a delete is a tombstone), and only once S3 holds them the slot advances past
   the page. A crash anywhere peeks the same changes again and stages the same rows; the
   merge applies a batch's versions once. The slot advances on empty pages too, so an idle
   table never pins WAL;
4. the slot's health (lag, `wal_status`) recorded under `_state/ingest/slot.json`, for the
   run's metrics and `ingestctl status`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from aws_lambda_powertools import Logger

from services.ingest.ingest import Ingest, TableResult, failed_result
from services.ingest.lines import change_line
from services.ingest.logical import ChangePage, ChangeReader, SlotHealth, consume, staging_rows
from services.ingest.source import SourceUnavailableError
from shared.layout import staging_key, state_key
from shared.observation import observed_at_metadata
from shared.rows import dump_lines
from shared.storage import ObjectStore
from shared.tables import TableSpec

logger = Logger(service="ingest")

# Changes per page: a page is one staging file per table and one slot advance. The peek
# returns whole transactions, so a page may hold more.
PAGE_CHANGES = 50_000
SLOT_HEALTH_KEY = state_key("ingest", "slot.json")


def page_observed_at(page: ChangePage) -> datetime | None:
    """The latest commit time of the page (the database's clock), for the files' metadata."""
    times = [t.commit_ts for t in page.transactions]
    return max(times) if times else None


class LogStager:
    """Stages each page of changes of the log-mode tables, then lets the slot advance."""

    def __init__(self, store: ObjectStore, specs: Sequence[TableSpec]) -> None:
        self.store = store
        self.specs = {spec.name: spec for spec in specs}
        self.staged: dict[str, int] = dict.fromkeys(self.specs, 0)
        self.truncated: set[str] = set()

    def __call__(self, page: ChangePage) -> None:
        observed = page_observed_at(page)
        for table, changes in sorted(page.by_table().items()):
            spec = self.specs.get(table)
            if spec is None or not changes:
                continue
            lines = [change_line(spec, row) for row in staging_rows(changes)]
            metadata = observed_at_metadata(observed) if observed else {}
            self.store.put(staging_key(table), dump_lines(lines), metadata=metadata)
            self.staged[table] += len(lines)
            logger.info("log changes staged", extra={"table": table, "changes": len(lines)})
        for table in page.truncated():
            if table in self.specs:
                self.truncated.add(table)
                logger.error(
                    "TRUNCATE at the source: its rows are not tombstoned; re-baseline the table",
                    extra={"table": table},
                )


def capture_log(
    reader: ChangeReader,
    store: ObjectStore,
    specs: Sequence[TableSpec],
    *,
    max_changes: int = PAGE_CHANGES,
) -> tuple[LogStager, SlotHealth]:
    """Steps 3 and 4 of the module doc (the slot exists, the baselines are written)."""
    stager = LogStager(store, specs)
    upto = reader.current_lsn()
    pages = consume(reader, upto, max_changes, stager)
    health = reader.health()
    store.put(SLOT_HEALTH_KEY, health.model_dump_json(indent=1).encode())
    logger.info(
        "log captured",
        extra={"pages": len(pages), "upto": upto, "slot": health.describe()},
    )
    return stager, health


class SlotCapture:
    """The log-mode part of a run (`ingest.LogCapture`), over one replication slot."""

    def __init__(
        self,
        reader: ChangeReader,
        store: ObjectStore,
        tables: Iterable[str],
        *,
        max_changes: int = PAGE_CHANGES,
    ) -> None:
        self.reader = reader
        self.store = store
        self._tables = frozenset(tables)
        self.max_changes = max_changes

    @property
    def tables(self) -> frozenset[str]:
        return self._tables

    def run(
        self, ingest: Ingest, specs: list[TableSpec]
    ) -> tuple[list[TableResult], SlotHealth | None]:
        baselines: dict[str, TableResult] = {}
        try:
            self.reader.ensure_slot()  # before any baseline: the handoff misses nothing
            for spec in specs:
                if not ingest.has_state(spec):
                    baselines[spec.name] = _baseline(ingest, spec)
            stager, health = capture_log(
                self.reader, self.store, specs, max_changes=self.max_changes
            )
        except Exception as exc:  # the slot stays where it was: the next run reads it again
            logger.exception("log capture failed")
            return [baselines.get(s.name) or failed_result(s, exc) for s in specs], None
        return [baselines.get(s.name) or _staged(s, stager) for s in specs], health


def _baseline(ingest: Ingest, spec: TableSpec) -> TableResult:
    try:
        return ingest.table(spec)
    except SourceUnavailableError:
        raise
    except Exception as exc:  # this table's baseline is read again next run
        return failed_result(spec, exc)


def _staged(spec: TableSpec, stager: LogStager) -> TableResult:
    count = stager.staged.get(spec.name, 0)
    note = "TRUNCATE at the source: re-baseline" if spec.name in stager.truncated else None
    return TableResult(
        table=spec.name,
        action="staging",
        key=staging_key(spec.name) if count else None,
        rows_read=count,
        rows_written=count,
        error=note,
    )
