"""Bad input: a file that is not JSON, not an array, or has a row its schema refuses.

The whole file is copied to `quarantine/<t>/` with a row-by-row report, its message goes to
the DLQ (which pauses ingest), and a record lets a redrive find the copy once the staging
version is gone. latest and history are untouched. Every write is create-only, so a redelivery
repeats nothing (an operator's fix of the copy in place stays); the DLQ send precedes the
record, so a crash between them can only send twice (a twin the commit log makes harmless),
never not at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_lambda_powertools.metrics import MetricUnit

from services.merge.observability import logger, metrics
from services.merge.once import create_once
from services.merge.outcome import Outcome
from services.merge.source import SourceVersion
from shared.commitlog import MergeStatus
from shared.layout import quarantine_key, quarantine_report_key
from shared.quarantine import QuarantineRecord, QuarantineReport, quarantine_record_key
from shared.queues import MessageSink
from shared.rows import RowProblem

if TYPE_CHECKING:
    from shared.storage import ObjectStore


def quarantine(
    store: ObjectStore,
    dead_letters: MessageSink,
    source: SourceVersion,
    message_body: str,
    reason: str,
    problems: list[RowProblem],
    *,
    drift: list[str] | None = None,
) -> Outcome:
    table = source.key.split("/", 1)[1].removesuffix(".json")
    stamp = source.ref.stamp
    copy_key = quarantine_key(table, stamp, source.batch)
    report_key = quarantine_report_key(table, stamp, source.batch)
    create_once(store, copy_key, source.data, content_type="application/octet-stream")
    report = QuarantineReport(
        table=table,
        batch=source.batch,
        source_key=source.key,
        source_version=source.ref.version_id,
        quarantine_key=copy_key,
        reason=reason,
        problems=problems,
        drift=drift or [],
    )
    create_once(store, report_key, report.model_dump_json(indent=2).encode())
    record = QuarantineRecord(
        table=table,
        batch=source.batch,
        source=source.ref,
        quarantine_key=copy_key,
        report_key=report_key,
        reason=reason,
        problems=len(problems),
    )
    record_key = quarantine_record_key(table, source.batch)
    if not store.exists(record_key):
        # A deterministic error: straight to the DLQ (which pauses ingest), no retries.
        dead_letters.send(message_body)
        create_once(store, record_key, record.model_dump_json(indent=1).encode())
    logger.error(
        "rejected: quarantined with a report, message sent to the DLQ",
        extra={"table": table, "batch": source.batch, "reason": reason, "problems": len(problems)},
    )
    for problem in problems[:20]:
        logger.debug("row problem", extra={"problem": str(problem)})
    metrics.add_metric("RejectedRows", MetricUnit.Count, max(len(problems), 1))
    return Outcome(MergeStatus.QUARANTINED, source, quarantine=record)


def read_record(store: ObjectStore, table: str, batch: str) -> QuarantineRecord | None:
    found = store.get_if_exists(quarantine_record_key(table, batch))
    return None if found is None else QuarantineRecord.model_validate_json(found.data)
