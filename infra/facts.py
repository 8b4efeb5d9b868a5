"""The deployment facts (shared/deployment_facts.py) in CDK's types: the one conversion."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_events as events
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from shared import deployment_facts as facts


def event_pattern(pattern: Mapping[str, Any]) -> events.EventPattern:
    """EventBridge's pattern (`detail-type`, ...) as CDK spells it (`detail_type`, ...)."""
    return events.EventPattern(**{key.replace("-", "_"): value for key, value in pattern.items()})


def queue(
    scope: Construct,
    construct_id: str,
    *,
    queue_name: str,
    settings: facts.QueueFacts,
    dlq: sqs.IQueue | None = None,
) -> sqs.Queue:
    """An encrypted, HTTPS-only queue with these settings; with `dlq`, redriven to it after
    `MAX_RECEIVE_COUNT` receives."""
    visibility = settings.visibility_timeout_seconds
    return sqs.Queue(
        scope,
        construct_id,
        queue_name=queue_name,
        retention_period=Duration.seconds(settings.retention_seconds),
        visibility_timeout=None if visibility is None else Duration.seconds(visibility),
        encryption=sqs.QueueEncryption.SQS_MANAGED,
        enforce_ssl=True,
        dead_letter_queue=None
        if dlq is None
        else sqs.DeadLetterQueue(queue=dlq, max_receive_count=facts.MAX_RECEIVE_COUNT),
    )


def sqs_trigger(function: lambda_.IFunction, queue: sqs.IQueue, trigger: facts.SqsTrigger) -> None:
    """Lambda drains `queue` into `function`, failing only the records the handler names."""
    function.add_event_source(
        sources.SqsEventSource(
            queue,
            batch_size=trigger.batch_size,
            max_batching_window=Duration.seconds(trigger.batching_window_seconds),
            report_batch_item_failures=True,
            max_concurrency=trigger.max_concurrency,
        )
    )


def dlq_alarm(
    scope: Construct, construct_id: str, *, dlq: sqs.IQueue, alarm_name: str, description: str
) -> cloudwatch.Alarm:
    """The alarm on `dlq` that `DLQ_ALARM` describes."""
    alarm = facts.DLQ_ALARM
    return cloudwatch.Alarm(
        scope,
        construct_id,
        alarm_name=alarm_name,
        alarm_description=description,
        metric=cloudwatch.Metric(
            namespace=alarm.namespace,
            metric_name=alarm.metric_name,
            dimensions_map={alarm.dimension: dlq.queue_name},
            period=Duration.seconds(alarm.period_seconds),
            statistic=alarm.statistic,
        ),
        threshold=alarm.threshold,
        comparison_operator=cloudwatch.ComparisonOperator[_member(alarm.comparison_operator)],
        evaluation_periods=alarm.evaluation_periods,
        treat_missing_data=cloudwatch.TreatMissingData[_member(alarm.treat_missing_data)],
    )


def _member(value: str) -> str:
    """CloudFormation's value (`GreaterThanThreshold`, `notBreaching`) as CDK's enum member."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", value).upper()
