"""Names of the AWS resources, shared by the CDK app and the local runtime.

One function per resource so that infra, `ingestctl local` and `ingestctl status` cannot
drift apart. `prefix` is the deployment's name (default `ingest`).
"""

from __future__ import annotations

DEFAULT_PREFIX = "ingest"


def merge_queue_name(table: str, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}-{table}"


def merge_dlq_name(table: str, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}-{table}-dlq"


def merge_function_name(table: str, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}-merge-{table}"


def dlq_alarm_name(table: str, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}-{table}-dlq-not-empty"


def event_bus_name(prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}-events"


def ingest_schedule_rule_name(prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}-schedule"


def consumer_queue_name(consumer: str, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}-{consumer}-events"


# The SQS redrive settings every table queue gets, on AWS and locally alike.
MAX_RECEIVE_COUNT = 5
DLQ_RETENTION_DAYS = 14
QUEUE_RETENTION_DAYS = 14
MERGE_FUNCTION_TIMEOUT_SECONDS = 120
QUEUE_VISIBILITY_TIMEOUT_SECONDS = 6 * MERGE_FUNCTION_TIMEOUT_SECONDS
MERGE_BATCH_SIZE = 10
EVENT_SOURCE = "ingest.merge"
