"""The transform: merge events (bus rule → transform queue + DLQ) → the warehouse in the bucket.

The queue, its DLQ and the rule are the bus's consumer wiring (infra/event_bus.py); this
construct adds the function that drains the queue, with its own code asset (pyarrow: the
merges do not carry it), a role that reads latest/ and history/ and writes warehouse/ only,
and an alarm on the DLQ. A transform failure does not pause ingest: the merge chain is
unaffected, and the warehouse catches up on redrive.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_events as events
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra import bucket_access
from infra import facts as infra_facts
from infra.service_function import ServiceFunction
from services.transform.settings import TransformSettings
from shared import commitlog, history_index, layout, naming, schema_state
from shared import deployment_facts as facts


class Transform(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        prefix: str,
        bucket: s3.IBucket,
        bus: events.IEventBus,
        queue: sqs.IQueue,
        dlq: sqs.IQueue,
        code: lambda_.Code,
    ) -> None:
        super().__init__(scope, construct_id)
        self.transform = ServiceFunction(
            self,
            "Transform",
            function_name=naming.transform_function_name(prefix),
            description="Keeps the star-schema warehouse (warehouse/ in the bucket) current "
            "from the merge's events",
            facts=facts.TRANSFORM,
            code=code,
            environment=TransformSettings.environment(
                bucket_name=bucket.bucket_name, event_bus_name=bus.event_bus_name
            ),
        )
        fn = self.transform
        latest = f"{layout.Area.LATEST}/*"
        history = f"{layout.Area.HISTORY}/*"
        warehouse = f"{layout.Area.WAREHOUSE}/*"
        schemas = schema_state.schema_key("*")
        # A partitioned table's latest is read by the versions its manifest names.
        fn.allow_objects(
            "ReadLatest",
            bucket,
            bucket_access.READ_VERSIONS,
            [latest],
            why_pattern="The transform reads every table's latest rows, a partitioned table's "
            "by version (read only).",
        )
        fn.allow_objects(
            "ReadHistory",
            bucket,
            bucket_access.READ,
            [history],
            why_pattern="The transform reads every table's history objects (read only).",
        )
        committed = [commitlog.log_prefix("*") + "*", history_index.index_prefix("*") + "*"]
        fn.allow_objects(
            "ReadCommittedHistory",
            bucket,
            bucket_access.READ,
            committed,
            why_pattern="Read-only: the commit log and the history index, which the change "
            "tables read a key's versions from (as ingestctl history does).",
        )
        fn.allow_objects(
            "ReadSchemaState",
            bucket,
            bucket_access.READ,
            [schemas],
            why_pattern="Read-only: every table's schema state (the columns the source added).",
        )
        fn.allow_objects(
            "ReadWriteWarehouse",
            bucket,
            bucket_access.READ_WRITE,
            [warehouse],
            why_pattern="The warehouse's Parquet files and manifests, named by table and "
            "partition: only under warehouse/.",
        )
        fn.allow(
            bucket_access.listing(
                "ListSources", bucket, [latest, history, warehouse, schemas, *committed]
            ),
            # S3 answers a read of a version that is gone with 403: the listing of that key's
            # versions tells gone from refused (shared/storage.py).
            bucket_access.listing("ListLatestVersions", bucket, [latest], versions=True),
        )
        bus.grant_put_events_to(fn.role)
        infra_facts.sqs_trigger(fn.function, queue, facts.TRANSFORM_TRIGGER)
        self.dlq_alarm = infra_facts.dlq_alarm(
            self,
            "DlqNotEmpty",
            dlq=dlq,
            alarm_name=naming.transform_dlq_alarm_name(prefix),
            description=f"A merge event failed the transform {facts.MAX_RECEIVE_COUNT} "
            "times; the warehouse lags until an operator redrives it.",
        )
        self.error_alarm = cloudwatch.Alarm(
            self,
            "TransformErrors",
            alarm_description="The transform function failed an invocation.",
            metric=fn.function.metric_errors(period=Duration.minutes(5), statistic="Sum"),
            threshold=0,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
