"""The AWS resources of one deployment, created on moto's server (or any endpoint).

The names come from `shared.naming`, the trigger keys from `shared.layout` and the tables from
`shared.tables.TABLES`, the same functions the CDK stack uses, so the local runtime cannot
drift from what `cdk deploy` creates. No event source mapping is created: moto would try to
invoke Lambda and bump the receive counts; the dispatcher plays that part instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3

from services.pause.models import PAUSE_EVENT_SOURCE
from shared import naming
from shared.layout import TRIGGER_AREAS, baseline_key, staging_key
from shared.tables import TABLES, get_table

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

DEFAULT_BUCKET = "ingest-local"
DEFAULT_REGION = "eu-west-2"
LOCAL_ACCOUNT = "123456789012"  # moto's default account
INGEST_SCHEDULE = "rate(20 minutes)"

# Downstream consumers of the bus: a rule + a capture queue each. `transform` takes what the
# merge says about the data; `operator` takes everything, pauses included.
CONSUMER_PATTERNS: Mapping[str, dict[str, Any]] = {
    naming.TRANSFORM_CONSUMER: {
        "source": [naming.EVENT_SOURCE],
        "detail-type": list(naming.TRANSFORM_DETAIL_TYPES),
    },
    "operator": {
        "source": [naming.EVENT_SOURCE, PAUSE_EVENT_SOURCE, naming.TRANSFORM_EVENT_SOURCE]
    },
}


@dataclass(frozen=True)
class QueueRef:
    name: str
    url: str
    arn: str


@dataclass(frozen=True)
class TableResources:
    table: str
    queue: QueueRef
    dlq: QueueRef
    alarm_name: str
    function_name: str


@dataclass(frozen=True)
class Deployment:
    """Everything `create_resources` made: what the dispatcher and the operators act on."""

    prefix: str
    region: str
    bucket: str
    event_bus: str
    schedule_rule: str
    tables: Mapping[str, TableResources]
    consumers: Mapping[str, QueueRef]


@dataclass(frozen=True)
class Clients:
    s3: S3Client
    sqs: SQSClient
    events: EventBridgeClient
    cloudwatch: CloudWatchClient

    @classmethod
    def create(cls, endpoint_url: str | None = None, region: str = DEFAULT_REGION) -> Clients:
        kwargs: dict[str, Any] = {"region_name": region}
        if endpoint_url:
            kwargs["endpoint_url"] = endpoint_url
        return cls(
            s3=boto3.client("s3", **kwargs),
            sqs=boto3.client("sqs", **kwargs),
            events=boto3.client("events", **kwargs),
            cloudwatch=boto3.client("cloudwatch", **kwargs),
        )


def notification_keys(table: str) -> list[str]:
    """The whole keys whose uploads notify a table's queue (whole keys: no prefix overlaps)."""
    by_area = {"staging": staging_key, "baseline": baseline_key}
    return [by_area[area.value](table) for area in TRIGGER_AREAS]


def create_resources(
    clients: Clients,
    *,
    bucket: str = DEFAULT_BUCKET,
    tables: Iterable[str] = tuple(TABLES),
    prefix: str = naming.DEFAULT_PREFIX,
    region: str = DEFAULT_REGION,
) -> Deployment:
    """Create the bucket, queues, DLQs, alarms, bus, consumer queues and schedule rule."""
    names = [get_table(t).name for t in tables]
    table_resources = {t: _create_table_queues(clients.sqs, t, prefix, bucket) for t in names}
    _create_bucket(clients.s3, bucket, table_resources)
    for res in table_resources.values():
        _create_dlq_alarm(clients.cloudwatch, res)
    bus = naming.event_bus_name(prefix)
    clients.events.create_event_bus(Name=bus)
    consumers = {
        consumer: _create_consumer(clients, bus, consumer, pattern, prefix)
        for consumer, pattern in CONSUMER_PATTERNS.items()
    }
    rule = naming.ingest_schedule_rule_name(prefix)
    clients.events.put_rule(Name=rule, ScheduleExpression=INGEST_SCHEDULE, State="ENABLED")
    return Deployment(
        prefix=prefix,
        region=region,
        bucket=bucket,
        event_bus=bus,
        schedule_rule=rule,
        tables=table_resources,
        consumers=consumers,
    )


def _create_queue(sqs: SQSClient, name: str, attributes: dict[str, str]) -> QueueRef:
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]  # type: ignore[arg-type]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    return QueueRef(name=name, url=url, arn=arn)


def _create_table_queues(sqs: SQSClient, table: str, prefix: str, bucket: str) -> TableResources:
    day = 24 * 3600
    dlq = _create_queue(
        sqs,
        naming.merge_dlq_name(table, prefix),
        {"MessageRetentionPeriod": str(naming.DLQ_RETENTION_DAYS * day)},
    )
    redrive = {"deadLetterTargetArn": dlq.arn, "maxReceiveCount": naming.MAX_RECEIVE_COUNT}
    queue = _create_queue(
        sqs,
        naming.merge_queue_name(table, prefix),
        {
            "VisibilityTimeout": str(naming.QUEUE_VISIBILITY_TIMEOUT_SECONDS),
            "MessageRetentionPeriod": str(naming.QUEUE_RETENTION_DAYS * day),
            "RedrivePolicy": json.dumps(redrive),
        },
    )
    # Real S3 may only send when the queue policy lets it (moto does not check; AWS does).
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "s3.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue.arn,
                "Condition": {"ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{bucket}"}},
            }
        ],
    }
    sqs.set_queue_attributes(QueueUrl=queue.url, Attributes={"Policy": json.dumps(policy)})
    return TableResources(
        table=table,
        queue=queue,
        dlq=dlq,
        alarm_name=naming.dlq_alarm_name(table, prefix),
        function_name=naming.merge_function_name(table, prefix),
    )


def _create_bucket(s3: S3Client, bucket: str, tables: Mapping[str, TableResources]) -> None:
    s3.create_bucket(
        Bucket=bucket,
        CreateBucketConfiguration={"LocationConstraint": s3.meta.region_name},  # type: ignore[typeddict-item]
    )
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    configurations: list[Any] = [
        {
            "Id": f"{res.table}-{key.partition('/')[0]}",
            "QueueArn": res.queue.arn,
            "Events": ["s3:ObjectCreated:*"],
            "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": key}]}},
        }
        for res in tables.values()
        for key in notification_keys(res.table)
    ]
    s3.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={"QueueConfigurations": configurations}
    )


def _create_dlq_alarm(cloudwatch: CloudWatchClient, res: TableResources) -> None:
    cloudwatch.put_metric_alarm(
        AlarmName=res.alarm_name,
        Namespace="AWS/SQS",
        MetricName="ApproximateNumberOfMessagesVisible",
        Dimensions=[{"Name": "QueueName", "Value": res.dlq.name}],
        Statistic="Maximum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=0,
        ComparisonOperator="GreaterThanThreshold",
        TreatMissingData="notBreaching",
    )


def _create_consumer(
    clients: Clients, bus: str, consumer: str, pattern: dict[str, Any], prefix: str
) -> QueueRef:
    attributes: dict[str, str] = {}
    if consumer == naming.TRANSFORM_CONSUMER:  # a consumer function's queue has its DLQ, as on AWS
        dlq = _create_queue(clients.sqs, naming.consumer_dlq_name(consumer, prefix), {})
        redrive = {"deadLetterTargetArn": dlq.arn, "maxReceiveCount": naming.MAX_RECEIVE_COUNT}
        attributes["RedrivePolicy"] = json.dumps(redrive)
    queue = _create_queue(clients.sqs, naming.consumer_queue_name(consumer, prefix), attributes)
    rule = naming.consumer_rule_name(consumer, prefix)
    clients.events.put_rule(
        Name=rule, EventBusName=bus, EventPattern=json.dumps(pattern), State="ENABLED"
    )
    clients.events.put_targets(
        Rule=rule, EventBusName=bus, Targets=[{"Id": consumer, "Arn": queue.arn}]
    )
    return queue
