"""One CloudWatch dashboard of the whole chain: queues, DLQs, merges, ingest and pause."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra.table_pipeline import TablePipeline
from shared import naming

PERIOD = Duration.minutes(5)


class ChainDashboard(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        prefix: str,
        pipelines: Sequence[TablePipeline],
        ingest: lambda_.IFunction,
        pause: lambda_.IFunction,
        alarms: Sequence[cloudwatch.IAlarm],
    ) -> None:
        super().__init__(scope, construct_id)
        self.dashboard = cloudwatch.Dashboard(
            self, "Dashboard", dashboard_name=naming.dashboard_name(prefix)
        )

        def per_table(title: str, metric_of: str, statistic: str) -> cloudwatch.GraphWidget:
            metrics = []
            for p in pipelines:
                source = {
                    "queue": p.queue.metric_approximate_number_of_messages_visible,
                    "age": p.queue.metric_approximate_age_of_oldest_message,
                    "dlq": p.dlq.metric_approximate_number_of_messages_visible,
                    "errors": p.merge.function.metric_errors,
                    "duration": p.merge.function.metric_duration,
                }[metric_of]
                metrics.append(source(period=PERIOD, statistic=statistic, label=p.table))
            return cloudwatch.GraphWidget(title=title, left=metrics, width=8, height=6)

        self.dashboard.add_widgets(
            cloudwatch.AlarmStatusWidget(title="Alarms", alarms=list(alarms), width=24, height=4)
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Ingest runs",
                left=[
                    ingest.metric_invocations(period=PERIOD, statistic="Sum"),
                    ingest.metric_errors(period=PERIOD, statistic="Sum"),
                ],
                right=[ingest.metric_duration(period=PERIOD, statistic="Maximum")],
                width=12,
                height=6,
            ),
            cloudwatch.GraphWidget(
                title="Pause invocations",
                left=[
                    pause.metric_invocations(period=PERIOD, statistic="Sum"),
                    pause.metric_errors(period=PERIOD, statistic="Sum"),
                ],
                width=12,
                height=6,
            ),
        )
        self.dashboard.add_widgets(
            per_table("Uploads waiting (per table queue)", "queue", "Maximum"),
            per_table("Oldest upload waiting, seconds", "age", "Maximum"),
            per_table("Messages in DLQ (ingest paused)", "dlq", "Maximum"),
        )
        self.dashboard.add_widgets(
            per_table("Merge errors", "errors", "Sum"),
            per_table("Merge duration, ms (max)", "duration", "Maximum"),
        )
