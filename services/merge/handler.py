"""The merge Lambda: an SQS batch of S3 notifications in, a partial batch response out."""

from __future__ import annotations

from typing import Any

from shared.coldstart import long_lived_imports

# Cold start: these imports are most of the Lambda's init time; see shared/coldstart.py.
with long_lived_imports():
    from aws_lambda_powertools.metrics import MetricUnit
    from aws_lambda_powertools.utilities.batch import (
        BatchProcessor,
        EventType,
        process_partial_response,
    )
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from services.merge.notifications import NotificationError, S3TestEvent, parse_body
    from services.merge.observability import logger, metrics
    from services.merge.service import MergeService
    from services.merge.settings import MergeSettings
    from services.merge.source import ObjectRef
    from shared.events import EventPublisher
    from shared.queues import MessageQueue
    from shared.storage import BucketStore

# Records as Powertools' light data classes, not its parser models: importing those builds
# a Pydantic model of every AWS event shape and doubles the cold start.
processor = BatchProcessor(event_type=EventType.SQS)
_service: MergeService | None = None


def build_service(settings: MergeSettings | None = None) -> MergeService:
    """The service with real adapters; each creates its boto3 client on first use."""
    settings = settings or MergeSettings.from_env()
    metrics.set_default_dimensions(table=settings.table_name)
    return MergeService(
        settings=settings,
        store=BucketStore(settings.bucket_name),
        publisher=EventPublisher(settings.event_bus_name),
        dead_letters=MessageQueue(settings.dlq_url),
    )


def get_service() -> MergeService:
    global _service
    if _service is None:
        _service = build_service()
    return _service


def use_service(service: MergeService | None) -> None:
    """Tests inject a service (e.g. with a faulty store); None goes back to the default."""
    global _service
    _service = service


def record_handler(record: SQSRecord) -> None:
    text = record.body
    try:
        body = parse_body(text)
    except NotificationError:
        # the record fails (and reaches the DLQ after its retries): say why, once per receive
        logger.exception(
            "not an S3 event notification; the message will be retried, then dead-lettered",
            extra={"message_id": record.message_id, "body": text[:200]},
        )
        raise
    if isinstance(body, S3TestEvent):
        logger.info("ignored S3 test event", extra={"event": body.Event})
        metrics.add_metric("TestEventsIgnored", MetricUnit.Count, 1)
        return
    service = get_service()
    for s3_record in body.Records:
        ref = ObjectRef(
            bucket=s3_record.bucket,
            key=s3_record.object_key,
            version_id=s3_record.s3.object.versionId,
            message_body=text,
            event_time=s3_record.eventTime,
            sequencer=s3_record.s3.object.sequencer,
            receive_count=int(record.attributes.approximate_receive_count or 1),
        )
        try:
            service.process(ref)
        except Exception:
            # the record fails (SQS redelivers it); say which object and why
            logger.exception(
                "merge failed; the message will be retried",
                extra={"key": ref.key, "version": ref.version_id},
            )
            raise


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    response = process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    return dict(response)
