"""`dismiss` and `replay`: repairs an operator makes after looking at the quarantine.

dismiss: the bad file's corrected version has been staged (and merged), so the DLQ message of
the quarantined batch needs no redrive. Its message is deleted; the quarantined copy and its
report stay as evidence; `_state/dismissed/<table>/<batch>.json` says who, when and why (status
lists dismissed batches but no longer counts them). Only messages whose batch the merge's
manifest records as quarantined are touched; every other message is put back untouched. A
quarantined batch whose message is already gone (a redrive of a still-bad file consumes it:
the merge validates the copy again and leaves it in quarantine) is recorded the same way.

replay: an archived file staged again, for recovery drills; the merge makes it a no-op unless
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
from services.merge.service import (
    BatchManifest,
    ManifestStatus,
    QuarantineReport,
    manifest_key,
    manifest_prefix,
)
from shared.layout import archive_prefix, batch_id, quarantine_prefix, staging_key, state_key
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


def quarantined_manifests(store: BucketStore, table: str, body: str) -> list[BatchManifest]:
    """The quarantined batches a DLQ message's notification names (none if it names none)."""
    try:
        notification = parse_body(body)
    except NotificationError:
        return []
    if not isinstance(notification, S3Notification):
        return []
    found = []
    for record in notification.Records:
        etag = (record.s3.object.eTag or "").strip('"')
        if record.s3.object.versionId:
            keys = [manifest_key(table, etag, batch_id(record.s3.object.versionId, etag))]
        else:  # moto's notifications carry no versionId: every batch of this content
            keys = sorted(store.keys(manifest_prefix(table, etag)))
        for key in keys:
            stored = store.get_if_exists(key)
            if stored is None:
                continue
            manifest = BatchManifest.model_validate_json(stored.data)
            if manifest.status is ManifestStatus.QUARANTINED:
                found.append(manifest)
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
                manifests = [
                    m
                    for m in quarantined_manifests(store, table, message["Body"])
                    if batches is None or m.batch in batches
                ]
                if not manifests:
                    held.append(message)
                    continue
                for manifest in manifests:
                    record = Dismissal(
                        table=table,
                        batch=manifest.batch,
                        quarantine_key=manifest.quarantine_key,
                        report_key=manifest.report_key,
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
            report_key=quarantine_report_key_of(report.quarantine_key),
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


REPORT_SUFFIX = ".report.json"


def quarantine_report_key_of(copy_key: str) -> str:
    return copy_key.removesuffix(".json") + REPORT_SUFFIX


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
    """Stage the archived file `archive` of `table` again."""
    if not archive.startswith(archive_prefix(table)):
        raise ReplayError(f"{archive!r} is not under {archive_prefix(table)}")
    found = store.get_if_exists(archive)
    if found is None:
        raise ReplayError(f"s3://{store.bucket}/{archive} does not exist")
    return store.put(staging_key(table), found.data)
