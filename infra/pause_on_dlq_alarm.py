"""DLQ alarm → EventBridge rule → pause function, which disables the ingest schedule."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra import bucket_access
from infra import facts as infra_facts
from infra.service_function import ServiceFunction
from services.pause.models import PauseSettings
from shared import deployment_facts as facts
from shared import layout, naming


class PauseOnDlqAlarm(Construct):
    """When any table's DLQ alarm goes to ALARM, ingest stops until an operator resumes it.

    CloudWatch publishes every alarm state change to the default event bus, so a rule there
    invokes the function directly: no SNS topic in between, one event shape to parse.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        prefix: str,
        bucket: s3.IBucket,
        bus: events.IEventBus,
        code: lambda_.Code,
        schedule_rule_name: str,
        schedule_rule_arn: str,
        dlq_alarms: Sequence[cloudwatch.IAlarm],
    ) -> None:
        super().__init__(scope, construct_id)
        self.pause = ServiceFunction(
            self,
            "Pause",
            function_name=naming.pause_function_name(prefix),
            description="Disables the ingest schedule when a merge DLQ is not empty",
            facts=facts.PAUSE,
            code=code,
            environment=PauseSettings.environment(
                bucket_name=bucket.bucket_name,
                event_bus_name=bus.event_bus_name,
                schedule_rule_name=schedule_rule_name,
            ),
        )
        pause_state = layout.state_key("pause*")
        self.pause.allow(
            # DescribeRule first: a rule already disabled is not disabled again (and the
            # pause is recorded as already in place).
            iam.PolicyStatement(
                sid="DisableIngestSchedule",
                actions=["events:DescribeRule", "events:DisableRule"],
                resources=[schedule_rule_arn],
            ),
            bucket_access.listing("ListPauseRecords", bucket, [pause_state]),
        )
        self.pause.allow_objects(
            "PauseRecord",
            bucket,
            bucket_access.READ_WRITE,
            [pause_state],
            why_pattern="The pause record(s) under _state/pause and nothing else.",
        )
        bus.grant_put_events_to(self.pause.role)

        self.rule = events.Rule(
            self,
            "OnDlqAlarm",
            rule_name=naming.pause_rule_name(prefix),
            description="A merge DLQ alarm entered ALARM: pause ingest",
            event_pattern=infra_facts.event_pattern(
                facts.pause_pattern([alarm.alarm_arn for alarm in dlq_alarms])
            ),
            targets=[
                targets.LambdaFunction(
                    self.pause.function, retry_attempts=facts.PAUSE_RETRY_ATTEMPTS
                )
            ],
        )
        self.error_alarm = cloudwatch.Alarm(
            self,
            "PauseErrors",
            alarm_description="The pause function failed: ingest may still be running.",
            metric=self.pause.function.metric_errors(period=Duration.minutes(5), statistic="Sum"),
            threshold=0,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
