"""`ingestctl status`: what each table holds and waits for, and whether ingest is paused.

Data collection only; `ops.render` draws it for people and `--json` prints the model as is.
Healthy (exit 0) = not paused, no DLQ message, no quarantined file left unresolved.
Sources: latest (rows, and its `merge-batch` metadata = the last committed batch), that batch's
manifest under `_state/merge/<t>/` (time, counts), the staging versions still waiting, the DLQ
depth, the quarantine (its `.report.json` for the first error; batches dismissed by an
operator are listed but not counted), history objects, the schedule rule and the pause record.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from ops.dismissal import REPORT_SUFFIX, dismissed_batches, quarantine_report_key_of
from ops.operations import Operator
from services.merge.service import (
    BATCH_METADATA,
    BatchManifest,
    ManifestStatus,
    QuarantineReport,
)
from shared.events import MergeCounts
from shared.layout import quarantine_prefix, staging_key, state_key
from shared.reader import iter_history, latest_commit_key, read_latest
from shared.storage import BucketStore
from shared.tables import get_table


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LastMerge(_Model):
    batch: str
    status: str | None = None  # from the manifest; None when the manifest was not found
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


class StatusReport(_Model):
    """The `--json` document (README: Operator runbook)."""

    bucket: str
    schedule_rule: str
    schedule_enabled: bool
    paused: bool
    pause_reason: str | None
    paused_since: datetime | None
    tables: dict[str, TableStatus]

    @property
    def healthy(self) -> bool:
        """What `status` exits 0 for: not paused, no DLQ message, no quarantined file that is
        neither merged (it leaves quarantine) nor dismissed."""
        return not self.paused and not any(
            t.dlq_messages or t.quarantined for t in self.tables.values()
        )


def last_merge(store: BucketStore, table: str) -> LastMerge | None:
    """The batch latest names (its metadata), with its manifest's time and counts if found."""
    commit_key = latest_commit_key(store, get_table(table))
    if commit_key is None:
        return None
    batch = store.metadata(commit_key).get(BATCH_METADATA)
    if not batch:
        return None
    # Manifests are `_state/merge/<t>/<etag>/<batch>.json`; the etag is the source's, unknown here.
    suffix = f"/{batch}.json"
    for key in store.keys(state_key("merge", table) + "/"):
        if key.endswith(suffix) and "/pending/" not in key:
            manifest = BatchManifest.model_validate_json(store.get(key).data)
            # latest names the batch, so it committed, though its plan says "prepared": the
            # merge does not rewrite the manifest after its commit
            status = (
                ManifestStatus.COMMITTED
                if manifest.status is ManifestStatus.PREPARED
                else manifest.status
            )
            return LastMerge(
                batch=batch,
                status=status.value,
                batch_time=manifest.source_last_modified,
                source_key=manifest.source_key,
                rows=manifest.rows,
                counts=manifest.counts,
            )
    return LastMerge(batch=batch)


def quarantine_files(store: BucketStore, table: str) -> list[QuarantinedFile]:
    dismissed = dismissed_batches(store, table)
    keys = sorted(store.keys(quarantine_prefix(table)))
    files = []
    for key in keys:
        if key.endswith(REPORT_SUFFIX):
            continue
        report_key = quarantine_report_key_of(key)
        stored = store.get_if_exists(report_key)
        report = None if stored is None else QuarantineReport.model_validate_json(stored.data)
        batch = report.batch if report else key.removesuffix(".json").rsplit("_", 1)[-1]
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
    store, spec = operator.store, get_table(table)
    history_objects = history_rows = 0
    for _, rows in iter_history(store, spec):
        history_objects += 1
        history_rows += len(rows)
    merge = last_merge(store, table)
    quarantine = quarantine_files(store, table)
    return TableStatus(
        latest_rows=len(read_latest(store, spec).rows),
        history_objects=history_objects,
        history_rows=history_rows,
        staging_pending=len(store.versions(staging_key(table))),
        dlq_messages=dlq_messages,
        quarantined=sum(not q.dismissed for q in quarantine),
        last_batch=merge.batch if merge else None,
        last_merge=merge,
        quarantine=quarantine,
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
    )
