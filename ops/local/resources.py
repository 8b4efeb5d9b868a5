"""The AWS resources of one deployment, created on moto's server (or any endpoint).

The names come from `shared.naming`, the queue settings, notification filters, rule patterns
and schedule from `shared.deployment_facts` and the tables from `shared.tables.TABLES`, as the
CDK stack's do; tests/infra/test_local_matches_stack.py compares the two. No event source
mapping is created, and no function: moto would try to invoke Lambda and bump the receive
counts; the dispatcher plays those parts instead (the rules target the functions' ARNs).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3

from services.pause.models import PAUSE_EVENT_SOURCE
from shared import deployment_facts as facts
from shared import naming
from shared.tables import TABLES, get_table

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

DEFAULT_BUCKET = "ingest-local"
DEFAULT_REGION = "eu-west-2"
LOCAL_ACCOUNT = "123456789012"  # moto's default account

# Downstream consumers of the bus: a rule + a queue each. `transform` is the stack's (its
# function drains the queue); `operator` is the local runtime's alone: it captures every
# event, pauses included, for `ingestctl local up` to show.
OPERATOR_CONSUMER = "operator"
CONSUMER_PATTERNS: Mapping[str, dict[str, Any]] = {
    naming.TRANSFORM_CONSUMER: facts.TRANSFORM_PATTERN,
    OPERATOR_CONSUMER: {
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
    alarm_arns = [_create_dlq_alarm(clients.cloudwatch, res) for res in table_resources.values()]
    bus = naming.event_bus_name(prefix)
    clients.events.create_event_bus(Name=bus)
    consumers = {
        consumer: _create_consumer(clients, bus, consumer, pattern, prefix)
        for consumer, pattern in CONSUMER_PATTERNS.items()
    }
    rule = naming.ingest_schedule_rule_name(prefix)
    clients.events.put_rule(
        Name=rule, ScheduleExpression=facts.INGEST_SCHEDULE_EXPRESSION, State="ENABLED"
    )
    functions = _FunctionArns(region, prefix)
    _target(clients, rule, functions.of(naming.ingest_function_name), facts.INGEST_RETRY_ATTEMPTS)
    pause_rule = naming.pause_rule_name(prefix)
    pattern = json.dumps(facts.pause_pattern(alarm_arns))
    clients.events.put_rule(Name=pause_rule, EventPattern=pattern, State="ENABLED")
    _target(
        clients, pause_rule, functions.of(naming.pause_function_name), facts.PAUSE_RETRY_ATTEMPTS
    )
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


def _create_queue_with_dlq(
    sqs: SQSClient, name: str, dlq_name: str, settings: facts.QueueFacts
) -> tuple[QueueRef, QueueRef]:
    dlq = _create_queue(sqs, dlq_name, facts.DLQ.attributes())
    redrive = json.dumps(facts.redrive_policy(dlq.arn))
    return _create_queue(sqs, name, settings.attributes() | {"RedrivePolicy": redrive}), dlq


def _create_table_queues(sqs: SQSClient, table: str, prefix: str, bucket: str) -> TableResources:
    queue, dlq = _create_queue_with_dlq(
        sqs,
        naming.merge_queue_name(table, prefix),
        naming.merge_dlq_name(table, prefix),
        facts.MERGE_QUEUE,
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
            "Events": [facts.NOTIFICATION_EVENT],
            "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": key}]}},
        }
        for res in tables.values()
        for key in facts.notification_prefixes(res.table)
    ]
    s3.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={"QueueConfigurations": configurations}
    )


def _create_dlq_alarm(cloudwatch: CloudWatchClient, res: TableResources) -> str:
    """The alarm on a table's DLQ (its ARN: the pause rule matches its state changes)."""
    measure = facts.DLQ_ALARM
    cloudwatch.put_metric_alarm(
        AlarmName=res.alarm_name,
        Namespace=measure.namespace,
        MetricName=measure.metric_name,
        Dimensions=[{"Name": measure.dimension, "Value": res.dlq.name}],
        Statistic=measure.statistic,  # type: ignore[arg-type]
        Period=measure.period_seconds,
        EvaluationPeriods=measure.evaluation_periods,
        Threshold=measure.threshold,
        ComparisonOperator=measure.comparison_operator,  # type: ignore[arg-type]
        TreatMissingData=measure.treat_missing_data,
    )
    (alarm,) = cloudwatch.describe_alarms(AlarmNames=[res.alarm_name])["MetricAlarms"]
    return alarm["AlarmArn"]


@dataclass(frozen=True)
class _FunctionArns:
    region: str
    prefix: str

    def of(self, name: Callable[[str], str]) -> str:
        return f"arn:aws:lambda:{self.region}:{LOCAL_ACCOUNT}:function:{name(self.prefix)}"


def _target(clients: Clients, rule: str, function_arn: str, retry_attempts: int) -> None:
    """The rule invokes the function (the dispatcher does, locally), retried as on AWS."""
    target: Any = {
        "Id": "function",
        "Arn": function_arn,
        "RetryPolicy": {"MaximumRetryAttempts": retry_attempts},
    }
    clients.events.put_targets(Rule=rule, Targets=[target])


def _create_consumer(
    clients: Clients, bus: str, consumer: str, pattern: dict[str, Any], prefix: str
) -> QueueRef:
    name = naming.consumer_queue_name(consumer, prefix)
    target: Any = {"Id": consumer}
    if consumer == naming.TRANSFORM_CONSUMER:  # a consumer function's queue has its DLQ, as on AWS
        dlq_name = naming.consumer_dlq_name(consumer, prefix)
        queue, dlq = _create_queue_with_dlq(clients.sqs, name, dlq_name, facts.TRANSFORM_QUEUE)
        target["DeadLetterConfig"] = {"Arn": dlq.arn}  # events it cannot deliver, as well
    else:
        queue = _create_queue(clients.sqs, name, {})
    target["Arn"] = queue.arn
    rule = naming.consumer_rule_name(consumer, prefix)
    clients.events.put_rule(
        Name=rule, EventBusName=bus, EventPattern=json.dumps(pattern), State="ENABLED"
    )
    clients.events.put_targets(Rule=rule, EventBusName=bus, Targets=[target])
    return queue
