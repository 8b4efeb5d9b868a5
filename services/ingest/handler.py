"""The ingest Lambda, on the schedule rule: read the source, write baseline/staging files."""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from services.ingest.app import run_with_settings
from services.ingest.settings import IngestSettings
from shared.naming import METRICS_NAMESPACE

logger = Logger(service="ingest")
# POWERTOOLS_METRICS_NAMESPACE wins where the deployment sets it.
metrics = Metrics(
    namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or METRICS_NAMESPACE, service="ingest"
)


class IngestFailedError(RuntimeError):
    """Some tables failed; the others were ingested. Raised so the invocation counts as an error."""


@metrics.log_metrics
@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    report = run_with_settings(IngestSettings.from_env())
    logger.info("ingest run done", extra={"summary": report.summary()})
    paused = report.paused or report.stopped_by_pause
    metrics.add_metric("IngestPaused", MetricUnit.Count, 1 if paused else 0)
    metrics.add_metric("TablesSkipped", MetricUnit.Count, len(report.skipped))
    metrics.add_metric("TablesFailed", MetricUnit.Count, len(report.failures))
    metrics.add_metric("RowsWritten", MetricUnit.Count, sum(t.rows_written for t in report.tables))
    if report.slot is not None:  # a run with log-mode tables: the slot's health
        metrics.add_metric("ReplicationSlotLagBytes", MetricUnit.Bytes, report.slot.lag_bytes or 0)
        metrics.add_metric("ReplicationSlotAtRisk", MetricUnit.Count, int(report.slot.at_risk))
    if not report.ok:
        raise IngestFailedError("; ".join(t.error or t.table for t in report.failures))
    return report.model_dump(mode="json")
