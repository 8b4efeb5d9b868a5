"""`ingestctl status`: what each table holds and waits for, and whether ingest is paused.

Data collection only; `ops.render` draws it for people and `--json` prints the model as is.
Healthy (exit 0) = not paused, no DLQ message, no quarantined file left unresolved.
Sources: latest (rows, and its `merge-seq` metadata = the commit log entry it reflects), that
entry under `_state/log/<t>/` (batch, source time, counts), the staging and baseline versions
still waiting, the DLQ depth, the quarantine (its `.report.json` for the first error; batches
dismissed by an operator are listed but not counted), history objects, the schedule rule and
the pause record. History is counted from its index (a checkpoint and the entries after it:
shared/history_lookup.py), not by reading every history object.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from ops.dismissal import dismissed_batches
from ops.operations import Operator
from services.ingest.log_ingest import SLOT_HEALTH_KEY
from services.ingest.logical import SlotHealth
from shared.commitlog import BATCH_METADATA, SEQ_METADATA, LogEntry, MergeStatus, entry_key
from shared.events import MergeCounts
from shared.history_lookup import history_totals
from shared.layout import baseline_key, batch_of_key, quarantine_prefix, staging_key
from shared.quarantine import REPORT_SUFFIX, QuarantineReport, report_key_of
from shared.reader import latest_commit_key, read_latest
from shared.schema_state import added_columns, effective_spec
from shared.storage import BucketStore
from shared.tables import get_table


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LastMerge(_Model):
    batch: str
    status: str | None = None  # "committed" from its log entry; None when no entry was found
    batch_time: datetime | None = None  # the staged (or baseline) object's own time
    source_key: str | None = None
    rows: int | None = None
    counts: MergeCounts | None = None


class QuarantinedFile(_Model):
    key: str
    batch: str
    first_error: str | None
    problems: int
    dismissed: bool = False


class TableStatus(_Model):
    latest_rows: int
    history_objects: int
    history_rows: int
    staging_pending: int
    dlq_messages: int
    quarantined: int  # not dismissed
    last_batch: str | None
    last_merge: LastMerge | None
    quarantine: list[QuarantinedFile]
    # columns the source added that the table's policy let in (shared/schema_state.py)
    added_columns: list[str] = []


class StatusReport(_Model):
    """The `--json` document (README: Operator runbook)."""

    bucket: str
    schedule_rule: str
    schedule_enabled: bool
    paused: bool
    pause_reason: str | None
    paused_since: datetime | None
    tables: dict[str, TableStatus]
    # The replication slot of log-mode tables, as the last ingest run saw it (None: no
    # table is captured from the log).
    replication_slot: SlotHealth | None = None

    @property
    def healthy(self) -> bool:
        """What `status` exits 0 for: not paused, no DLQ message, no quarantined file that is
        neither merged (it leaves quarantine) nor dismissed, no replication slot at risk."""
        slot_at_risk = self.replication_slot is not None and self.replication_slot.at_risk
        return not (self.paused or slot_at_risk) and not any(
            t.dlq_messages or t.quarantined for t in self.tables.values()
        )


def last_merge(store: BucketStore, table: str) -> LastMerge | None:
    """The commit log entry latest reflects (its `merge-seq` metadata): batch, time, counts.

    latest without that metadata (written before the commit log) gives its `merge-batch` alone;
    an entry that cannot be found leaves the batch without details."""
    commit_key = latest_commit_key(store, get_table(table))
    if commit_key is None:
        return None
    metadata = store.metadata(commit_key)
    seq = metadata.get(SEQ_METADATA)
    found = store.get_if_exists(entry_key(table, int(seq))) if seq and seq.isdigit() else None
    if found is None:
        batch = metadata.get(BATCH_METADATA)
        return LastMerge(batch=batch) if batch else None
    entry = LogEntry.model_validate_json(found.data)
    return LastMerge(
        batch=entry.batch,
        status=MergeStatus.COMMITTED.value,  # an entry is a commit
        batch_time=entry.source.last_modified,
        source_key=entry.source.key,
        rows=entry.rows,
        counts=entry.counts,
    )


def pending_versions(store: BucketStore, table: str) -> int:
    """Versions still waiting to be merged: staging's and baseline's (both are deleted once
    merged)."""
    return sum(len(store.versions(key)) for key in (staging_key(table), baseline_key(table)))


def quarantine_files(store: BucketStore, table: str) -> list[QuarantinedFile]:
    dismissed = dismissed_batches(store, table)
    keys = sorted(store.keys(quarantine_prefix(table)))
    files = []
    for key in keys:
        if key.endswith(REPORT_SUFFIX):
            continue
        report_key = report_key_of(key)
        stored = store.get_if_exists(report_key)
        report = None if stored is None else QuarantineReport.model_validate_json(stored.data)
        batch = report.batch if report else batch_of_key(key)
        first = None
        if report is not None:
            first = str(report.problems[0]) if report.problems else report.reason
        files.append(
            QuarantinedFile(
                key=key,
                batch=batch,
                first_error=first,
                problems=len(report.problems) if report else 0,
                dismissed=batch in dismissed,
            )
        )
    return files


def table_status(operator: Operator, table: str, dlq_messages: int) -> TableStatus:
    store = operator.store
    spec = effective_spec(store, get_table(table))
    history_objects, history_rows = history_totals(store, spec)
    merge = last_merge(store, table)
    quarantine = quarantine_files(store, table)
    return TableStatus(
        latest_rows=len(read_latest(store, spec).rows),
        history_objects=history_objects,
        history_rows=history_rows,
        staging_pending=pending_versions(store, table),
        dlq_messages=dlq_messages,
        quarantined=sum(not q.dismissed for q in quarantine),
        last_batch=merge.batch if merge else None,
        last_merge=merge,
        quarantine=quarantine,
        added_columns=list(added_columns(spec)),
    )


def _said(cause: str, message: str) -> str:
    return cause if message in cause else f"{cause}: {message}"


def collect_status(operator: Operator) -> StatusReport:
    depths = {d.table: d.total for d in operator.dlq_depths()}
    record = operator.pause_state()
    enabled = operator.schedule_enabled()
    recorded = record is not None and record.paused
    reason = None
    if recorded and record is not None:
        reason = "; ".join(_said(r.cause, r.message) for r in record.reasons) or "paused"
    elif not enabled:
        reason = f"the schedule rule {operator.schedule_rule} is disabled (no pause record)"
    return StatusReport(
        bucket=operator.bucket,
        schedule_rule=operator.schedule_rule,
        schedule_enabled=enabled,
        paused=recorded or not enabled,
        pause_reason=reason,
        paused_since=record.paused_at if recorded and record is not None else None,
        tables={t: table_status(operator, t, depths.get(t, 0)) for t in operator.tables},
        replication_slot=replication_slot(operator.store),
    )


def replication_slot(store: BucketStore) -> SlotHealth | None:
    """The slot's health the last ingest run with log-mode tables recorded."""
    stored = store.get_if_exists(SLOT_HEALTH_KEY)
    return None if stored is None else SlotHealth.model_validate_json(stored.data)
