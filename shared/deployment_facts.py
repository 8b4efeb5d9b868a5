"""The deployment's facts, each defined once: what the CDK stack declares and the local runtime
plays (`infra/` converts them to CDK types, `ops/local/` uses them as they are).

Plain values: seconds as ints, event patterns as the dicts EventBridge reads, handlers in
Lambda's spelling. The resources' names are `shared/naming.py`'s; the variables a function
reads are its settings model's (`shared/environment.py`). tests/infra/test_local_matches_stack.py
holds the local runtime to the synthesized template.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared import naming
from shared.layout import baseline_key, staging_key

DAY_SECONDS = 24 * 60 * 60
# The variable Powertools names a function's logs and metrics by.
SERVICE_NAME_VARIABLE = "POWERTOOLS_SERVICE_NAME"


@dataclass(frozen=True)
class FunctionFacts:
    """One kind of function: its service name, handler, memory and timeout."""

    service: str
    handler: str  # Lambda's spelling: package.module.function
    memory_mb: int
    timeout_seconds: int

    @property
    def local_handler(self) -> str:
        """The handler as the local runtime resolves it: `package.module:function`."""
        module, _, function = self.handler.rpartition(".")
        return f"{module}:{function}"

    def service_environment(self) -> dict[str, str]:
        return {SERVICE_NAME_VARIABLE: self.service}


MERGE = FunctionFacts(
    "merge", "services.merge.handler.handler", memory_mb=1024, timeout_seconds=120
)
INGEST = FunctionFacts(
    "ingest", "services.ingest.handler.handler", memory_mb=512, timeout_seconds=300
)
PAUSE = FunctionFacts("pause", "services.pause.handler.handler", memory_mb=256, timeout_seconds=30)
# pyarrow and a month of fact rows per partition file: more memory than a merge.
TRANSFORM = FunctionFacts(
    "transform", "services.transform.handler.handler", memory_mb=2048, timeout_seconds=300
)
FUNCTIONS = {facts.service: facts for facts in (MERGE, INGEST, PAUSE, TRANSFORM)}


@dataclass(frozen=True)
class SqsTrigger:
    """Lambda's SQS event source of a function: at most `batch_size` records an invocation,
    no batching window (take what is there at once), at most `max_concurrency` at a time."""

    batch_size: int
    max_concurrency: int
    batching_window_seconds: int = 0


# Each table gets one staging file every 20 minutes, so batching buys nothing. Lambda's
# minimum concurrency for an SQS event source: two merges of one table at once are safe
# (latest is replaced only by a conditional write) but each conflict costs a re-read.
MERGE_TRIGGER = SqsTrigger(batch_size=10, max_concurrency=2)
# Two transforms at once are safe (every warehouse file is replaced by a conditional write).
TRANSFORM_TRIGGER = SqsTrigger(batch_size=10, max_concurrency=2)


@dataclass(frozen=True)
class QueueFacts:
    """An SQS queue's settings; `visibility_timeout_seconds` None is SQS's default (a DLQ)."""

    retention_seconds: int
    visibility_timeout_seconds: int | None = None

    def attributes(self) -> dict[str, str]:
        """The queue's attributes as SQS's CreateQueue takes them (encrypted, SQS-managed)."""
        attributes = {
            "MessageRetentionPeriod": str(self.retention_seconds),
            "SqsManagedSseEnabled": "true",
        }
        if self.visibility_timeout_seconds is not None:
            attributes["VisibilityTimeout"] = str(self.visibility_timeout_seconds)
        return attributes


def consumer_queue(function: FunctionFacts) -> QueueFacts:
    # Lambda asks for at least the function's timeout; 6x leaves room for retries.
    return QueueFacts(14 * DAY_SECONDS, visibility_timeout_seconds=6 * function.timeout_seconds)


# A table's merge queue and the transform's queue (each with a DLQ), on AWS and locally alike.
MERGE_QUEUE = consumer_queue(MERGE)
TRANSFORM_QUEUE = consumer_queue(TRANSFORM)
DLQ = QueueFacts(14 * DAY_SECONDS)
# Receives of one message before SQS moves it to the queue's DLQ.
MAX_RECEIVE_COUNT = 5


@dataclass(frozen=True)
class DlqAlarmFacts:
    """What a DLQ's alarm measures and when it fires: any message visible in the last minute
    (the pause rule takes its change into ALARM; the local runtime plays it)."""

    namespace: str = "AWS/SQS"
    metric_name: str = "ApproximateNumberOfMessagesVisible"
    dimension: str = "QueueName"
    statistic: str = "Maximum"
    period_seconds: int = 60
    evaluation_periods: int = 1
    threshold: float = 0
    comparison_operator: str = "GreaterThanThreshold"
    treat_missing_data: str = "notBreaching"


DLQ_ALARM = DlqAlarmFacts()


def redrive_policy(dlq_arn: str) -> dict[str, Any]:
    return {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVE_COUNT}


# The S3 events that notify a table's queue, and the whole keys they are filtered on: whole
# keys, because S3 refuses overlapping filters and `staging/payment` would overlap
# `staging/payment_type.json`.
NOTIFICATION_EVENT = "s3:ObjectCreated:*"


def notification_prefixes(table: str) -> tuple[str, ...]:
    return (staging_key(table), baseline_key(table))


# The ingest schedule (the stack's ScheduleExpression parameter's default) and how often
# EventBridge retries a failed asynchronous invocation of its target.
INGEST_EVERY_MINUTES = 20
INGEST_SCHEDULE_EXPRESSION = f"rate({INGEST_EVERY_MINUTES} minutes)"
INGEST_RETRY_ATTEMPTS = 2
# Pausing twice changes nothing: retry a failed pause for long.
PAUSE_RETRY_ATTEMPTS = 10

# The merge events the transform consumes (StagingArchived etc. carry no rows it needs).
TRANSFORM_DETAIL_TYPES = ("HistoryAppended", "BaselinePromoted")
TRANSFORM_PATTERN: dict[str, Any] = {
    "source": [naming.EVENT_SOURCE],
    "detail-type": list(TRANSFORM_DETAIL_TYPES),
}
# CloudWatch puts every alarm's state changes on the default bus; the pause rule takes the
# DLQ alarms' changes into ALARM.
ALARM_STATE_CHANGE = "CloudWatch Alarm State Change"


def pause_pattern(alarm_arns: list[str]) -> dict[str, Any]:
    return {
        "source": ["aws.cloudwatch"],
        "detail-type": [ALARM_STATE_CHANGE],
        "resources": list(alarm_arns),
        "detail": {"state": {"value": ["ALARM"]}},
    }
