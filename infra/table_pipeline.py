"""One table's merge chain: S3 notifications → queue (+ DLQ) → merge function, with its alarms."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from constructs import Construct

from infra import bucket_access, constants
from infra import facts as infra_facts
from infra.service_function import ServiceFunction
from services.merge.settings import MergeSettings
from shared import commitlog, layout, naming, schema_state
from shared import deployment_facts as facts


class TablePipeline(Construct):
    """Everything one table needs to merge its uploads, and nothing another table can touch."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        table: str,
        prefix: str,
        bucket: s3.IBucket,
        bus: events.IEventBus,
        code: lambda_.Code,
    ) -> None:
        super().__init__(scope, construct_id)
        self.table = table
        self.dlq = infra_facts.queue(
            self, "Dlq", queue_name=naming.merge_dlq_name(table, prefix), settings=facts.DLQ
        )
        self.queue = infra_facts.queue(
            self,
            "Queue",
            queue_name=naming.merge_queue_name(table, prefix),
            settings=facts.MERGE_QUEUE,
            dlq=self.dlq,
        )
        for key in facts.notification_prefixes(table):
            bucket.add_event_notification(
                s3.EventType.OBJECT_CREATED,  # facts.NOTIFICATION_EVENT in CDK's spelling
                s3n.SqsDestination(self.queue),
                s3.NotificationKeyFilter(prefix=key),
            )

        self.merge = ServiceFunction(
            self,
            "Merge",
            function_name=naming.merge_function_name(table, prefix),
            description=f"Merges staging/{table}.json and baseline/{table}.json into latest",
            facts=facts.MERGE,
            code=code,
            environment=MergeSettings.environment(
                bucket_name=bucket.bucket_name,
                table_name=table,
                event_bus_name=bus.event_bus_name,
                dlq_url=self.dlq.queue_url,
            ),
        )
        self._grant_merge_access(bucket, bus)
        infra_facts.sqs_trigger(self.merge.function, self.queue, facts.MERGE_TRIGGER)
        self._alarms(table, prefix)

    def _grant_merge_access(self, bucket: s3.IBucket, bus: events.IEventBus) -> None:
        t = self.table
        staging = layout.staging_key(t)
        baseline = layout.baseline_key(t)
        # `latest/<t>.*`, never `latest/<t>*`: `latest/payment*` would match payment_type's keys.
        # A partitioned table keeps latest under `latest/<t>/` (the slash is the boundary).
        latest = f"{layout.Area.LATEST}/{t}.*"
        partitions = f"{layout.latest_partition_prefix(t)}*"
        history = f"{layout.history_prefix(t)}*"
        archive = f"{layout.archive_prefix(t)}*"
        quarantine = f"{layout.quarantine_prefix(t)}*"
        state = layout.state_key("merge", t, "*")
        schema = schema_state.schema_key(t)
        log = f"{commitlog.log_prefix(t)}*"
        fn = self.merge
        own = f"only {t}'s own keys under this prefix"
        # The merge reads the exact version its event names, then deletes exactly that version
        # (never a bare delete, which would leave a delete marker); baselines too.
        fn.allow_objects(
            "StagingVersions",
            bucket,
            ("s3:GetObject", "s3:GetObjectVersion", "s3:DeleteObjectVersion"),
            [staging, baseline],
        )
        # Delete: bare deletes of the partition objects (and the one file) a commit stopped
        # listing; they stay as noncurrent versions for readers of the older manifest.
        fn.allow_objects(
            "ReadWriteLatest",
            bucket,
            (*bucket_access.READ_VERSIONS, "s3:PutObject", "s3:DeleteObject"),
            [latest, partitions],
            why_pattern=(
                f"latest/{t}.json, or latest/{t}/_manifest.json and its key-range partitions; "
                f"{own}."
            ),
        )
        # Read as well as write: a late arrival goes to history only if it is not there yet,
        # and a retried merge checks what it already wrote.
        fn.allow_objects(
            "HistoryArchive",
            bucket,
            bucket_access.READ_WRITE,
            [history, archive],
            why_pattern=f"Each merge writes a new object named by its batch: {own}.",
        )
        # A redriven message re-validates its file from quarantine and removes it from there
        # once it merges (docs/merge_protocol.md, "The objects").
        fn.allow_objects(
            "Quarantine",
            bucket,
            (*bucket_access.READ_WRITE, "s3:DeleteObject"),
            [quarantine],
            why_pattern=f"Rejected files and reports are named by batch: {own}.",
        )
        # The commit log (entries are created once, never deleted), quarantine records and
        # the columns the source added (the merge records them before the commit).
        fn.allow_objects(
            "MergeState",
            bucket,
            bucket_access.READ_WRITE,
            [log, state, schema],
            why_pattern=f"The table's commit log, quarantine records and schema state: {own}.",
        )
        fn.allow(
            bucket_access.listing(
                "ListOwnKeys",
                bucket,
                [
                    *(staging, baseline, latest, partitions, history, archive, quarantine),
                    *(log, state, schema),
                ],
                versions=True,
            )
        )
        # Bad input goes straight to the DLQ, without retries (README, "Operator runbook"): the
        # merge sends it by URL, so SendMessage alone (CDK's grant adds GetQueueAttributes,
        # GetQueueUrl).
        fn.allow(
            iam.PolicyStatement(
                sid="SendToDlq", actions=["sqs:SendMessage"], resources=[self.dlq.queue_arn]
            )
        )
        bus.grant_put_events_to(fn.role)

    def _alarms(self, table: str, prefix: str) -> None:
        self.dlq_alarm = infra_facts.dlq_alarm(
            self,
            "DlqNotEmpty",
            dlq=self.dlq,
            alarm_name=naming.dlq_alarm_name(table, prefix),
            description=f"A {table} message failed {facts.MAX_RECEIVE_COUNT} times; "
            "ingest pauses until an operator redrives it.",
        )
        self.age_alarm = cloudwatch.Alarm(
            self,
            "QueueStale",
            alarm_description=f"A {table} upload has waited over 20 minutes for its merge.",
            metric=self.queue.metric_approximate_age_of_oldest_message(
                period=Duration.minutes(1), statistic="Maximum"
            ),
            threshold=constants.QUEUE_AGE_ALARM_SECONDS,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self.duration_alarm = cloudwatch.Alarm(
            self,
            "MergeSlow",
            alarm_description=f"A {table} merge took over "
            f"{constants.MERGE_DURATION_ALARM_SHARE:.0%} of its {facts.MERGE.timeout_seconds} s "
            "timeout: see the README's runbook before merges time out.",
            metric=self.merge.function.metric_duration(
                period=Duration.minutes(5), statistic="Maximum"
            ),
            threshold=constants.MERGE_DURATION_ALARM_SHARE * facts.MERGE.timeout_seconds * 1000,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self.error_alarm = cloudwatch.Alarm(
            self,
            "MergeErrors",
            alarm_description=f"The {table} merge function failed an invocation.",
            metric=self.merge.function.metric_errors(period=Duration.minutes(5), statistic="Sum"),
            threshold=0,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
