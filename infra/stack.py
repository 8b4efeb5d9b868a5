"""The whole chain as one stack: it composes the constructs and exposes parameters and outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aws_cdk import Annotations, Aws, CfnCondition, CfnOutput, CfnParameter, Fn, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra import constants, nag
from infra.alarm_topic import AlarmTopic
from infra.catalog import WarehouseCatalog
from infra.chain_dashboard import ChainDashboard
from infra.event_bus import ChainEventBus
from infra.ingest_bucket import IngestBucket
from infra.ingest_schedule import IngestSchedule
from infra.operator_policy import OperatorPolicy
from infra.pause_on_dlq_alarm import PauseOnDlqAlarm
from infra.table_pipeline import TablePipeline
from infra.transform import Transform
from shared import deployment_facts as facts
from shared import naming
from shared.tables import TABLES


def concurrency_warning(account_concurrency: int | None) -> str | None:
    """What to tell the deployer whose account allows fewer concurrent executions than the
    stack can run at once (None: nothing, or the quota is not known)."""
    needed = constants.MIN_ACCOUNT_CONCURRENCY
    if account_concurrency is None or account_concurrency >= needed:
        return None
    return (
        f"account_concurrency is {account_concurrency}, but this stack can run {needed} Lambda "
        "executions at once (the first run starts a merge per table): some will be throttled "
        "and retried after the queue's visibility timeout. Ask Service Quotas for at least "
        f"{needed} concurrent executions."
    )


class IngestStack(Stack):
    """`asset_dir` is the Lambda code: the bundle `make bundle` builds (or any folder, in tests);
    `transform_asset_dir` the transform's own bundle (with pyarrow; default: `asset_dir`).

    `prefix` names every resource (shared/naming.py); it is fixed at synth time because names
    are needed to wire rules, alarms and outputs, and it lets two deployments share an account.

    `account_concurrency`, when known, is the account's Lambda concurrency quota: below what
    the stack can run at once, synth warns.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        asset_dir: Path,
        transform_asset_dir: Path | None = None,
        prefix: str = naming.DEFAULT_PREFIX,
        source_secret_arn_default: str | None = None,
        account_concurrency: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.prefix = prefix
        params = self._parameters(source_secret_arn_default)
        code = lambda_.Code.from_asset(str(asset_dir))

        self.storage = IngestBucket(self, "Storage", bucket_name=None)
        self._optional_bucket_name(self.storage.bucket, params["IngestBucketName"])
        bucket = self.storage.bucket

        self.events = ChainEventBus(self, "Events", prefix=prefix)
        bus = self.events.bus

        self.pipelines = [
            TablePipeline(
                self,
                f"Table-{table}",
                table=table,
                prefix=prefix,
                bucket=bucket,
                bus=bus,
                code=code,
            )
            for table in TABLES
        ]
        self.schedule = IngestSchedule(
            self,
            "Ingest",
            prefix=prefix,
            bucket=bucket,
            bus=bus,
            code=code,
            schedule_expression=params["ScheduleExpression"].value_as_string,
            source_secret_arn=params["SourceSecretArn"].value_as_string,
        )
        self.pause = PauseOnDlqAlarm(
            self,
            "Pause",
            prefix=prefix,
            bucket=bucket,
            bus=bus,
            code=code,
            schedule_rule_name=naming.ingest_schedule_rule_name(prefix),
            schedule_rule_arn=self.schedule.rule_arn,
            dlq_alarms=[p.dlq_alarm for p in self.pipelines],
        )
        self.transform = Transform(
            self,
            "Transform",
            prefix=prefix,
            bucket=bucket,
            bus=bus,
            queue=self.events.transform_queue,
            dlq=self.events.transform_dlq,
            code=lambda_.Code.from_asset(str(transform_asset_dir or asset_dir)),
        )
        self.catalog = WarehouseCatalog(
            self, "Catalog", prefix=prefix, bucket=bucket, access_logs=self.storage.access_logs
        )
        alarms = [self.schedule.error_alarm, *self.schedule.slot_alarms, self.pause.error_alarm]
        alarms += [self.transform.dlq_alarm, self.transform.error_alarm]
        for p in self.pipelines:
            alarms += [p.dlq_alarm, p.age_alarm, p.error_alarm, p.duration_alarm]
        self.alarm_topic = AlarmTopic(
            self, "Alarms", prefix=prefix, email=params["AlarmEmail"].value_as_string
        )
        self._notify_operators(alarms)
        self.operator = OperatorPolicy(
            self,
            "Operator",
            prefix=prefix,
            bucket=bucket,
            bus=bus,
            schedule_rule_arn=self.schedule.rule_arn,
            queues=[p.queue for p in self.pipelines],
            dlqs=[p.dlq for p in self.pipelines],
        )
        ChainDashboard(
            self,
            "Dashboard",
            prefix=prefix,
            pipelines=self.pipelines,
            ingest=self.schedule.ingest.function,
            pause=self.pause.pause.function,
            alarms=alarms,
        )
        self._outputs()
        nag.acknowledge_stack(self)
        if warning := concurrency_warning(account_concurrency):
            Annotations.of(self).add_warning_v2("ingest:accountConcurrency", warning)

    def _notify_operators(self, alarms: list[cloudwatch.Alarm]) -> None:
        """Every alarm goes to the alarm topic (the pause rule reads the same alarms' state
        changes on the default bus, which actions do not affect).

        A DLQ holding messages or a stale queue is a condition: say when it clears too. The
        error alarms count failures per 5 minutes, and a slow merge's alarm its longest run,
        and clear by themselves: ALARM only.
        """
        errors = [self.schedule.error_alarm, self.pause.error_alarm, self.transform.error_alarm]
        errors += [alarm for p in self.pipelines for alarm in (p.error_alarm, p.duration_alarm)]
        for alarm in alarms:
            self.alarm_topic.notify(alarm, when_cleared=alarm not in errors)

    def _parameters(self, source_secret_arn_default: str | None) -> dict[str, CfnParameter]:
        secret_kwargs: dict[str, Any] = {}
        if source_secret_arn_default:
            secret_kwargs["default"] = source_secret_arn_default
        return {
            "IngestBucketName": CfnParameter(
                self,
                "IngestBucketName",
                type="String",
                default="",
                description="Name of the ingest bucket; empty lets CloudFormation choose one",
            ),
            "ScheduleExpression": CfnParameter(
                self,
                "ScheduleExpression",
                type="String",
                default=facts.INGEST_SCHEDULE_EXPRESSION,
                description="How often ingest runs (EventBridge rate() or cron() expression)",
            ),
            "SourceSecretArn": CfnParameter(
                self,
                "SourceSecretArn",
                type="String",
                allowed_pattern=r"arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:.+",
                constraint_description="the full ARN of a Secrets Manager secret",
                description="ARN of the Secrets Manager secret holding the source database "
                "connection (host, port, dbname, username, password)",
                **secret_kwargs,
            ),
            "AlarmEmail": CfnParameter(
                self,
                "AlarmEmail",
                type="String",
                default="",
                allowed_pattern=r"^$|^[^@\s]+@[^@\s]+$",
                constraint_description="an email address, or empty",
                description="Email address told of every alarm (confirm the subscription "
                "mail AWS sends); empty for none",
            ),
        }

    def _optional_bucket_name(self, bucket: s3.Bucket, name: CfnParameter) -> None:
        """Use the IngestBucketName parameter when it is set, else let CloudFormation name it."""
        named = CfnCondition(
            self, "BucketNameGiven", expression=Fn.condition_not(Fn.condition_equals(name, ""))
        )
        cfn_bucket = bucket.node.default_child
        assert isinstance(cfn_bucket, s3.CfnBucket)
        cfn_bucket.bucket_name = Fn.condition_if(
            named.logical_id, name.value_as_string, Aws.NO_VALUE
        ).to_string()

    def _outputs(self) -> None:
        def output(kind: str, value: str, description: str, table: str | None = None) -> None:
            CfnOutput(self, naming.output_id(kind, table), value=value, description=description)

        output("BucketName", self.storage.bucket.bucket_name, "The ingest bucket")
        output("AccessLogBucketName", self.storage.access_logs.bucket_name, "Its access logs")
        output("EventBusName", self.events.bus.event_bus_name, "The chain's event bus")
        output("EventBusArn", self.events.bus.event_bus_arn, "The chain's event bus")
        output("AlarmTopicArn", self.alarm_topic.topic.topic_arn, "Every alarm notifies it")
        output(
            "OperatorPolicyArn",
            self.operator.policy.managed_policy_arn,
            "Attach to whoever runs ingestctl",
        )
        output("ScheduleRuleName", self.schedule.rule.rule_name, "The ingest schedule rule")
        output("IngestFunctionName", self.schedule.ingest.function.function_name, "Ingest")
        output("PauseFunctionName", self.pause.pause.function.function_name, "Pause")
        output("TransformQueueUrl", self.events.transform_queue.queue_url, "Transform queue")
        output("TransformDlqUrl", self.events.transform_dlq.queue_url, "Transform DLQ")
        output(
            "TransformFunctionName",
            self.transform.transform.function.function_name,
            "Transform",
        )
        output("GlueDatabaseName", self.catalog.database_name, "The warehouse's Glue database")
        output("AthenaWorkGroupName", self.catalog.workgroup.ref, "Athena workgroup to query it")
        output("AthenaResultsBucketName", self.catalog.results.bucket_name, "Its query results")
        for p in self.pipelines:
            output("QueueUrl", p.queue.queue_url, f"{p.table} merge queue", p.table)
            output("DlqUrl", p.dlq.queue_url, f"{p.table} merge DLQ", p.table)
            output("MergeFunctionName", p.merge.function.function_name, f"{p.table} merge", p.table)
