"""Settings of the CDK app that are not resource names (those live in `shared/naming.py`)."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs

from shared import naming
from shared.tables import TABLES

# The newest Python Lambda offers in CDK 2.275; `scripts/bundle.py` builds wheels for the same
# version, so the two must move together.
LAMBDA_RUNTIME = lambda_.Runtime.PYTHON_3_14
LAMBDA_PYTHON_VERSION = "3.14"
LAMBDA_ARCHITECTURE = lambda_.Architecture.ARM_64
LOG_RETENTION = logs.RetentionDays.ONE_MONTH

MERGE_HANDLER = "services.merge.handler.handler"
PAUSE_HANDLER = "services.pause.handler.handler"
INGEST_HANDLER = "services.ingest.handler.handler"
TRANSFORM_HANDLER = "services.transform.handler.handler"

MERGE_MEMORY_MB = 1024
MERGE_TIMEOUT = Duration.seconds(naming.MERGE_FUNCTION_TIMEOUT_SECONDS)
# Each table gets one staging file every 20 minutes, so batching buys nothing and only delays
# the merge: take what is there at once (no batching window), up to MERGE_BATCH_SIZE records
# (which the handler merges one after another within one invocation, well inside its timeout).
MERGE_BATCHING_WINDOW = Duration.seconds(0)
# Lambda's minimum for an SQS event source. Two merges of one table at once are safe (latest is
# replaced only by a conditional write) but each conflict costs a re-read, so keep it low.
MERGE_MAX_CONCURRENCY = 2

INGEST_MEMORY_MB = 512
INGEST_TIMEOUT = Duration.minutes(5)
# Re-read rows changed this long before the watermark: late commits are caught, and the merge
# drops the duplicates (unchanged rows write nothing).
INGEST_OVERLAP_SECONDS = 300
# The replication slot of log-mode tables: alarm when it holds this much WAL not yet captured
# (about a day of a busy totesys; the source's disk is what fills).
SLOT_LAG_ALARM_BYTES = 1024**3

PAUSE_MEMORY_MB = 256
PAUSE_TIMEOUT = Duration.seconds(30)

# An S3 notification waits at most this long in a table queue before the age alarm fires: one
# ingest interval.
QUEUE_AGE_ALARM_SECONDS = 20 * 60

# How long noncurrent versions are kept, per area: shared/retention.py (the local runtime's
# lifecycle player reads the same rules).

ARCHIVE_TO_INFREQUENT_ACCESS = Duration.days(30)
ACCESS_LOG_EXPIRY = Duration.days(365)
EVENT_ARCHIVE_RETENTION = Duration.days(90)

# The downstream transform consumes these merge events (README, "Warehouse (transform)").
TRANSFORM_DETAIL_TYPES = naming.TRANSFORM_DETAIL_TYPES
# pyarrow and a month of fact rows per partition file: more memory than a merge.
TRANSFORM_MEMORY_MB = 2048
TRANSFORM_BATCH_SIZE = 10
# Two transforms at once are safe (every warehouse file is replaced by a conditional write).
TRANSFORM_MAX_CONCURRENCY = 2

# Lambda concurrency. It is capped on the SQS event sources (MERGE_/TRANSFORM_MAX_CONCURRENCY),
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
        tables * MERGE_MAX_CONCURRENCY
        + TRANSFORM_MAX_CONCURRENCY
        + INGEST_MAX_CONCURRENCY
        + PAUSE_MAX_CONCURRENCY
    )


# The Lambda concurrency quota (per account and region) under which nothing of the stack is
# throttled: 26 for the 11 totesys tables. New accounts can start with 10; raise it with
# Service Quotas ("Concurrent executions"). Below it nothing is lost: a throttled merge's
# message returns to its queue after the visibility timeout (6x the function timeout) and
# goes to the DLQ only after naming.MAX_RECEIVE_COUNT receives (see docs/decisions.md).
MIN_ACCOUNT_CONCURRENCY = max_concurrent_executions()
