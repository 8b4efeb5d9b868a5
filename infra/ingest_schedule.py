"""The ingest function and the schedule rule that runs it (the rule pause disables)."""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra import bucket_access, constants
from infra.service_function import ServiceFunction
from infra.source_access import SourceAccess
from services.ingest.settings import DEFAULT_OVERLAP_SECONDS, IngestSettings
from shared import deployment_facts as facts
from shared import layout, naming, schema_state
from shared.tables import TABLES


class IngestSchedule(Construct):
    """Every `schedule` the ingest function copies changed rows into staging/ (or baseline/)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        prefix: str,
        bucket: s3.IBucket,
        bus: events.IEventBus,
        code: lambda_.Code,
        schedule_expression: str,
        source_secret_arn: str,
    ) -> None:
        super().__init__(scope, construct_id)
        rule_name = naming.ingest_schedule_rule_name(prefix)
        # The rule's ARN from its name, so the function can be told its own rule without a
        # circular reference (the rule targets the function).
        self.rule_arn = rule_arn_of(self, rule_name)
        # The Source* parameters: the network, where and how to connect, the secret's key.
        self.source = SourceAccess(self, "Source")
        self.ingest = ServiceFunction(
            self,
            "Ingest",
            function_name=naming.ingest_function_name(prefix),
            description="Copies rows changed in the source database to staging/<table>.json",
            facts=facts.INGEST,
            code=code,
            environment=IngestSettings.environment(
                bucket_name=bucket.bucket_name,
                event_bus_name=bus.event_bus_name,
                source_secret_arn=source_secret_arn,
                schedule_rule_name=rule_name,
                overlap_seconds=DEFAULT_OVERLAP_SECONDS,
            )
            | self.source.environment,
        )
        self.source.attach(self.ingest, source_secret_arn)
        self._grant_ingest_access(bucket, bus, source_secret_arn)
        self.rule = events.Rule(
            self,
            "Schedule",
            rule_name=rule_name,
            description="Runs ingest; the pause function disables it when a DLQ fills",
            schedule=events.Schedule.expression(schedule_expression),
            targets=[
                targets.LambdaFunction(
                    self.ingest.function, retry_attempts=facts.INGEST_RETRY_ATTEMPTS
                )
            ],
        )
        self.error_alarm = cloudwatch.Alarm(
            self,
            "IngestErrors",
            alarm_description="An ingest run failed; the next run re-reads from the watermark.",
            metric=self.ingest.function.metric_errors(period=Duration.minutes(5), statistic="Sum"),
            threshold=0,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self.slot_alarms = [
            self._slot_alarm(
                "ReplicationSlotLag",
                "ReplicationSlotLagBytes",
                constants.SLOT_LAG_ALARM_BYTES,
                "The replication slot of log-mode tables keeps more WAL than it should (ingest "
                "paused or failing?): the source's disk fills. Runbook: 'Replication slot'.",
            ),
            self._slot_alarm(
                "ReplicationSlotAtRisk",
                "ReplicationSlotAtRisk",
                0,
                "The replication slot's WAL is past max_wal_size (unreserved) or lost: changes "
                "may be lost. Runbook: 'Replication slot' (re-baseline the tables).",
            ),
        ]

    def _slot_alarm(
        self, construct_id: str, metric_name: str, threshold: float, description: str
    ) -> cloudwatch.Alarm:
        """An alarm on a slot metric the ingest emits on runs with log-mode tables."""
        metric = cloudwatch.Metric(
            namespace=naming.METRICS_NAMESPACE,
            metric_name=metric_name,
            dimensions_map={"service": "ingest"},
            statistic="Maximum",
            period=Duration.minutes(20),
        )
        return cloudwatch.Alarm(
            self,
            construct_id,
            alarm_description=description,
            metric=metric,
            threshold=threshold,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )

    def _grant_ingest_access(
        self, bucket: s3.IBucket, bus: events.IEventBus, source_secret_arn: str
    ) -> None:
        uploads = [layout.staging_key(t) for t in TABLES] + [layout.baseline_key(t) for t in TABLES]
        state = layout.state_key("ingest", "*")
        pause = layout.state_key("pause*")
        latest = [layout.latest_key(t) for t in TABLES]
        partitions = [f"{layout.latest_partition_prefix(t)}*" for t in TABLES]
        schemas = [schema_state.schema_key(t) for t in TABLES]
        fn = self.ingest
        fn.allow_objects("WriteUploads", bucket, bucket_access.WRITE, uploads)
        # Watermarks and run records; the pause record is read so a paused ingest stays idle.
        fn.allow_objects(
            "IngestState",
            bucket,
            bucket_access.READ_WRITE,
            [state],
            why_pattern="Ingest's own bookkeeping (watermarks per table) under _state/ingest/.",
        )
        fn.allow_objects(
            "ReadPause",
            bucket,
            bucket_access.READ,
            [pause],
            why_pattern="Read-only: the pause record(s) the pause function writes.",
        )
        # Whether a table has been copied at all (the first run writes baseline/).
        fn.allow_objects("ReadLatest", bucket, bucket_access.READ, latest)
        # Reconcile reads latest through the one reader, which also reads a partitioned
        # table's manifest and the partition versions it names.
        fn.allow_objects(
            "ReadLatestPartitions",
            bucket,
            bucket_access.READ_VERSIONS,
            partitions,
            why_pattern="Read-only: a partitioned table's latest manifest and partitions.",
        )
        # The columns the source added (the merge writes them): rows are read with them.
        fn.allow_objects(
            "ReadSchemaState",
            bucket,
            bucket_access.READ,
            schemas,
            why_pattern="Read-only: each table's schema state, which the merge writes.",
        )
        fn.allow(
            bucket_access.listing(
                "ListOwnKeys", bucket, [state, pause, *latest, *partitions, *schemas]
            ),
            iam.PolicyStatement(
                sid="ReadSourceSecret",
                actions=["secretsmanager:GetSecretValue"],
                resources=[source_secret_arn],
            ),
            iam.PolicyStatement(
                sid="ReadOwnSchedule",
                actions=["events:DescribeRule"],
                resources=[self.rule_arn],
            ),
        )
        bus.grant_put_events_to(fn.role)


def rule_arn_of(scope: Construct, rule_name: str) -> str:
    """The ARN of a rule on the default bus, from its name."""
    return Stack.of(scope).format_arn(
        service="events",
        resource="rule",
        resource_name=rule_name,
        arn_format=ArnFormat.SLASH_RESOURCE_NAME,
    )
