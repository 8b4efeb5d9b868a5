"""Settings of the CDK app alone: those the local runtime shares (handlers, timeouts, memory,
queues, patterns) are `shared/deployment_facts.py`'s, the names `shared/naming.py`'s."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs

from shared import deployment_facts as facts
from shared.tables import TABLES

# The newest Python Lambda offers in CDK 2.275; `scripts/bundle.py` builds wheels for the same
# version, so the two must move together.
LAMBDA_RUNTIME = lambda_.Runtime.PYTHON_3_14
LAMBDA_PYTHON_VERSION = "3.14"
LAMBDA_ARCHITECTURE = lambda_.Architecture.ARM_64
LOG_RETENTION = logs.RetentionDays.ONE_MONTH

# The replication slot of log-mode tables: alarm when it holds this much WAL not yet captured
# (about a day of a busy totesys; the source's disk is what fills).
SLOT_LAG_ALARM_BYTES = 1024**3

# An S3 notification waits at most this long in a table queue before the age alarm fires: one
# ingest interval.
QUEUE_AGE_ALARM_SECONDS = 20 * 60

# A merge alarms once it takes this share of its timeout: warning before merges time out, retry
# into the DLQ and pause ingest. A big table whose changes spread over its keys grows the
# history index's build with its history (README, Performance, "Open (issue 17)").
MERGE_DURATION_ALARM_SHARE = 0.5

# How long noncurrent versions are kept, per area: shared/retention.py (the local runtime's
# lifecycle player reads the same rules).

ARCHIVE_TO_INFREQUENT_ACCESS = Duration.days(30)
ACCESS_LOG_EXPIRY = Duration.days(365)
EVENT_ARCHIVE_RETENTION = Duration.days(90)

# Lambda concurrency. It is capped on the SQS event sources (shared/deployment_facts.py),
# never reserved. Ingest (on its schedule) and pause (on a DLQ alarm) are invoked
# asynchronously and run one at a time in practice; several DLQ alarms at once can start more
# pauses, but Lambda retries a throttled asynchronous invocation for hours, and pausing twice
# changes nothing. (CDK's bucket notifications handler runs only during a deployment.)
INGEST_MAX_CONCURRENCY = 1
PAUSE_MAX_CONCURRENCY = 1


def max_concurrent_executions(tables: int = len(TABLES)) -> int:
    """The most executions the stack can run at once: every SQS event source at its maximum
    concurrency (a merge per table, the transform), plus ingest and pause. The first run alone
    needs more than a new account's 10: ingest writes every table's baseline at once, so a
    merge per table runs beside ingest, and the transforms of their events follow."""
    return (
        tables * facts.MERGE_TRIGGER.max_concurrency
        + facts.TRANSFORM_TRIGGER.max_concurrency
        + INGEST_MAX_CONCURRENCY
        + PAUSE_MAX_CONCURRENCY
    )


# The Lambda concurrency quota (per account and region) under which nothing of the stack is
# throttled: 26 for the 11 totesys tables. New accounts can start with 10; raise it with
# Service Quotas ("Concurrent executions"). Below it nothing is lost: a throttled merge's
# message returns to its queue after the visibility timeout (6x the function timeout) and
# goes to the DLQ only after MAX_RECEIVE_COUNT receives (see docs/decisions.md).
MIN_ACCOUNT_CONCURRENCY = max_concurrent_executions()
