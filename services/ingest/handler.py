"""The ingest Lambda, on the schedule rule: read the source, write baseline/staging files."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from services.ingest.app import run_with_settings
from services.ingest.settings import IngestSettings

logger = Logger(service="ingest")


class IngestFailedError(RuntimeError):
    """Some tables failed; the others were ingested. Raised so the invocation counts as an error."""


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    report = run_with_settings(IngestSettings.from_env())
    logger.info("ingest run done", extra={"summary": report.summary()})
    if not report.ok:
        raise IngestFailedError("; ".join(t.error or t.table for t in report.failures))
    return report.model_dump(mode="json")
