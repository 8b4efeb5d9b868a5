"""`dismiss` and `replay`: repairs an operator makes after looking at the quarantine.

dismiss: the bad file's corrected version has been staged (and merged), so the DLQ message of
the quarantined batch needs no redrive. Its message is deleted; the quarantined copy and its
report stay as evidence; `_state/dismissed/<table>/<batch>.json` says who, when and why (status
lists dismissed batches but no longer counts them). Only messages whose batch the merge
recorded as quarantined (its `QuarantineRecord`, while the quarantined copy is there) are
touched; every other message is put back untouched. A
quarantined batch whose message is already gone (a redrive of a still-bad file consumes it:
the merge validates the copy again and leaves it in quarantine) is recorded the same way.

replay: an archived file staged again, for recovery drills, marked `replay-of` the archive so
the merge treats it as the same batch (no new archive, the same event ids): a no-op unless
latest lost its rows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from ops.operations import Operator
from services.merge.notifications import NotificationError, S3Notification, parse_body
from shared.commitlog import AREA_METADATA, REPLAY_OF_METADATA
from shared.layout import (
    Area,
    archive_prefix,
    baseline_key,
    batch_id,
    quarantine_prefix,
    staging_key,
    state_key,
)
from shared.quarantine import (
    REPORT_SUFFIX,
    QuarantineRecord,
    QuarantineReport,
    quarantine_record_key,
    report_key_of,
)
from shared.storage import BucketStore, PreconditionFailedError, WriteResult

DISMISS_VISIBILITY_SECONDS = 60


class Dismissal(BaseModel):
    """`_state/dismissed/<table>/<batch>.json`: a quarantined batch an operator closed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    table: str
    batch: str
    quarantine_key: str | None
    report_key: str | None
    message_id: str | None  # None: no DLQ message named the batch any more
    dismissed_by: str
    dismissed_at: datetime
    reason: str


def dismissal_key(table: str, batch: str) -> str:
    return state_key("dismissed", table, f"{batch}.json")


def dismissed_batches(store: BucketStore, table: str) -> set[str]:
    prefix = state_key("dismissed", table) + "/"
    return {key.removeprefix(prefix).removesuffix(".json") for key in store.keys(prefix)}


@dataclass(frozen=True)
class DismissResult:
    dismissed: list[Dismissal]
    kept: int  # DLQ messages left in place (not of a quarantined batch, or not asked for)


def quarantined_records(store: BucketStore, table: str, body: str) -> list[QuarantineRecord]:
    """The quarantined batches a DLQ message's notification names (none if it names none):
    each record's version has a batch, the batch a `QuarantineRecord`; it counts while the
    quarantined copy is there (a redrive that merges it takes it out of quarantine)."""
    try:
        notification = parse_body(body)
    except NotificationError:
        return []
    if not isinstance(notification, S3Notification):
        return []
    found = []
    for record in notification.Records:
        version_id = record.s3.object.versionId
        if not version_id:
            continue  # the merge refuses it too: no version, no batch
        stored = store.get_if_exists(quarantine_record_key(table, batch_id(version_id, None)))
        if stored is None:
            continue
        quarantined = QuarantineRecord.model_validate_json(stored.data)
        if store.exists(quarantined.quarantine_key):
            found.append(quarantined)
    return found


def dismiss(
    operator: Operator,
    table: str,
    *,
    batches: Collection[str] | None,
    reason: str,
    by: str,
    now: datetime,
) -> DismissResult:
    (pair,) = operator.queue_pairs([table])
    sqs, store = operator.sqs, operator.store
    held: list[Any] = []
    dismissed: list[Dismissal] = []
    try:
        while True:
            messages = sqs.receive_message(
                QueueUrl=pair.dlq_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=1,
                VisibilityTimeout=DISMISS_VISIBILITY_SECONDS,
            ).get("Messages", [])
            if not messages:
                break
            for message in messages:
                quarantined = [
                    q
                    for q in quarantined_records(store, table, message["Body"])
                    if batches is None or q.batch in batches
                ]
                if not quarantined:
                    held.append(message)
                    continue
                for found in quarantined:
                    record = Dismissal(
                        table=table,
                        batch=found.batch,
                        quarantine_key=found.quarantine_key,
                        report_key=found.report_key,
                        message_id=message["MessageId"],
                        dismissed_by=by,
                        dismissed_at=now,
                        reason=reason,
                    )
                    # Record first, then delete: an interruption leaves the message, never an
                    # unexplained deletion.
                    _record(store, record)
                    dismissed.append(record)
                sqs.delete_message(QueueUrl=pair.dlq_url, ReceiptHandle=message["ReceiptHandle"])
    finally:
        for message in held:  # what we did not dismiss goes back at once
            with contextlib.suppress(Exception):
                sqs.change_message_visibility(
                    QueueUrl=pair.dlq_url,
                    ReceiptHandle=message["ReceiptHandle"],
                    VisibilityTimeout=0,
                )
    done = {d.batch for d in dismissed} | dismissed_batches(store, table)
    for report in quarantine_reports(store, table):
        if report.batch in done or (batches is not None and report.batch not in batches):
            continue
        record = Dismissal(
            table=table,
            batch=report.batch,
            quarantine_key=report.quarantine_key,
            report_key=report_key_of(report.quarantine_key),
            message_id=None,
            dismissed_by=by,
            dismissed_at=now,
            reason=reason,
        )
        _record(store, record)
        dismissed.append(record)
    return DismissResult(dismissed=dismissed, kept=len(held))


def _record(store: BucketStore, record: Dismissal) -> None:
    # A record already there (a rerun) stands.
    with contextlib.suppress(PreconditionFailedError):
        store.put(
            dismissal_key(record.table, record.batch),
            record.model_dump_json(indent=2).encode(),
            create_only=True,
        )


def quarantine_reports(store: BucketStore, table: str) -> list[QuarantineReport]:
    """The reports of the files in the table's quarantine, oldest first."""
    reports = []
    for key in sorted(store.keys(quarantine_prefix(table))):
        if key.endswith(REPORT_SUFFIX):
            found = store.get_if_exists(key)
            if found is not None:
                reports.append(QuarantineReport.model_validate_json(found.data))
    return reports


class ReplayError(ValueError):
    """The key is not an archived file of that table, or it does not exist."""


def replay(store: BucketStore, table: str, archive: str) -> WriteResult:
    """Stage the archived file `archive` of `table` again, where it came from, marked as a
    replay of it (`replay-of`): the merge applies it as the archived batch, observed when that
    was, so it repeats that batch's events (a baseline's too: it goes back to baseline/)."""
    if not archive.startswith(archive_prefix(table)):
        raise ReplayError(f"{archive!r} is not under {archive_prefix(table)}")
    found = store.get_if_exists(archive)
    if found is None:
        raise ReplayError(f"s3://{store.bucket}/{archive} does not exist")
    came_from = found.metadata.get(AREA_METADATA)
    key = baseline_key(table) if came_from == Area.BASELINE.value else staging_key(table)
    return store.put(key, found.data, metadata={REPLAY_OF_METADATA: archive})
