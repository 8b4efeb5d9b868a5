"""The transform Lambda: an SQS batch of merge events in, a partial batch response out."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.parser.models import SqsRecordModel
from aws_lambda_powertools.utilities.typing import LambdaContext

from services.transform.events import parse_message
from services.transform.observability import logger, metrics
from services.transform.service import SourceChange, TransformService
from services.transform.settings import TransformSettings
from shared.events import EventPublisher
from shared.naming import TRANSFORM_EVENT_SOURCE
from shared.storage import BucketStore

processor = BatchProcessor(event_type=EventType.SQS, model=SqsRecordModel)
_runtime: tuple[TransformService, EventPublisher] | None = None


def build_runtime(
    settings: TransformSettings | None = None,
) -> tuple[TransformService, EventPublisher]:
    """The service and publisher with real adapters (clients are created on first use)."""
    settings = settings or TransformSettings.from_env()
    sink = None
    if settings.warehouse_dsn:
        from services.transform.postgres import PostgresWarehouse

        sink = PostgresWarehouse.from_url(settings.warehouse_dsn)
    service = TransformService(BucketStore(settings.bucket_name), sink=sink)
    return service, EventPublisher(settings.event_bus_name, source=TRANSFORM_EVENT_SOURCE)


def get_runtime() -> tuple[TransformService, EventPublisher]:
    global _runtime
    if _runtime is None:
        _runtime = build_runtime()
    return _runtime


def use_runtime(runtime: tuple[TransformService, EventPublisher] | None) -> None:
    """Tests inject a runtime; None goes back to the default."""
    global _runtime
    _runtime = runtime


def record_handler(record: SqsRecordModel) -> None:
    detail = parse_message(str(record.body))
    if detail is None:
        logger.info("ignored an event the transform does not use")
        metrics.add_metric("EventsIgnored", MetricUnit.Count, 1)
        return
    service, publisher = get_runtime()
    change = SourceChange.from_event(detail)
    try:
        report = service.apply(change)
    except Exception:
        logger.exception(
            "transform failed; the message will be retried",
            extra={"cause": change.cause, "table": change.table},
        )
        raise
    publisher.publish([service.updated_event(change, report)])
    metrics.add_metric("WarehouseRowsWritten", MetricUnit.Count, report.rows_written)
    metrics.add_metric("WarehouseFilesWritten", MetricUnit.Count, len(report.files_written))
    logger.info(
        "warehouse updated",
        extra={"cause": change.cause, "tables": report.tables, "files": report.files_written},
    )


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    response = process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    return dict(response)
