"""Names of the AWS resources, shared by the CDK app and the local runtime.

One function per resource so that infra, `ingestctl local` and `ingestctl status` cannot
drift apart; what else the two share (timeouts, queues, patterns) is in
`shared/deployment_facts.py`. `prefix` is the deployment's name (default `ingest`).
"""

from __future__ import annotations

DEFAULT_PREFIX = "ingest"
# The CloudWatch namespace of the functions' own metrics (POWERTOOLS_METRICS_NAMESPACE wins).
METRICS_NAMESPACE = "IngestBucket"


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


def replication_slot_name(prefix: str = DEFAULT_PREFIX) -> str:
    """The logical replication slot the ingest reads log-mode tables from (PostgreSQL allows
    lower-case letters, digits and underscores)."""
    return f"{prefix.lower().replace('-', '_')}_changes"


def consumer_queue_name(consumer: str, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}-{consumer}-events"


# The source of the merge's events on the bus, and of the transform's.
EVENT_SOURCE = "ingest.merge"
TRANSFORM_EVENT_SOURCE = "ingest.transform"
# The bus consumer the transform function drains (its queue, DLQ and rule are named by it).
TRANSFORM_CONSUMER = "transform"


def transform_function_name(prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}-transform"


def transform_dlq_alarm_name(prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}-transform-dlq-not-empty"


def ingest_function_name(prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}-ingest"


def pause_function_name(prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}-pause"


def pause_rule_name(prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}-pause-on-dlq-alarm"


def consumer_dlq_name(consumer: str, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{consumer_queue_name(consumer, prefix)}-dlq"


def consumer_rule_name(consumer: str, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}-{consumer}-events"


def event_archive_name(prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}-events-archive"


def dashboard_name(prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}-chain"


def alarm_topic_name(prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}-alarms"


def glue_database_name(prefix: str = DEFAULT_PREFIX) -> str:
    """The Glue database of the warehouse and change tables (Athena: lower case, digits and
    underscores)."""
    return f"{prefix.lower().replace('-', '_')}_warehouse"


def athena_workgroup_name(prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}-warehouse"


def stack_name(prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}-stack"


def output_id(kind: str, table: str | None = None) -> str:
    """The CloudFormation output id of `kind` (e.g. `QueueUrl`), per table where one is given:
    `QueueUrlPaymentType`. Operators' tools read the stack outputs by these ids."""
    if table is None:
        return kind
    return kind + "".join(part.capitalize() for part in table.split("_"))
