"""A moto chain for the transform: the real merge writes latest/history and puts its events on
a bus, an EventBridge rule routes them to the transform queue (as in the stack), and `deliver`
plays Lambda's event source for the real transform handler."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3

from services.merge.outcome import Outcome
from services.merge.service import MergeService
from services.merge.settings import MergeSettings
from services.merge.source import ObjectRef
from services.transform import handler as transform_handler
from services.transform.service import TransformService
from shared.deployment_facts import TRANSFORM_PATTERN
from shared.events import EventPublisher
from shared.layout import baseline_key, staging_key
from shared.naming import TRANSFORM_EVENT_SOURCE, consumer_queue_name
from shared.observation import observed_at_metadata
from shared.queues import MessageQueue
from shared.rows import dump_rows, validate_rows
from shared.storage import BucketStore
from shared.tables import TABLES

BUCKET = "transform-test-bucket"
REGION = "eu-west-2"
BUS = "transform-test-events"


@dataclass
class Context:
    function_name: str = "ingest-transform-test"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:eu-west-2:123456789012:function:ingest-transform"
    aws_request_id: str = "req-1"


class TransformChain:
    def __init__(self, sink=None):
        self.s3 = boto3.client("s3", region_name=REGION)
        self.sqs = boto3.client("sqs", region_name=REGION)
        events = boto3.client("events", region_name=REGION)
        self.s3.create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"}
        )
        self.s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        events.create_event_bus(Name=BUS)
        self.dlq_url = self.sqs.create_queue(QueueName="merge-dlq")["QueueUrl"]
        self.queue_url = self._queue_with_rule(
            events,
            consumer_queue_name("transform", "test"),
            TRANSFORM_PATTERN,
        )
        self.updates_url = self._queue_with_rule(
            events, "warehouse-updates", {"source": [TRANSFORM_EVENT_SOURCE]}
        )
        self.store = BucketStore(BUCKET)
        self.service = TransformService(self.store, sink=sink)
        transform_handler.use_runtime(
            (self.service, EventPublisher(BUS, source=TRANSFORM_EVENT_SOURCE))
        )
        self.delivered: list[str] = []  # every merge event handed to the transform

    def _queue_with_rule(self, events, name, pattern):
        url = self.sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        events.put_rule(Name=name, EventBusName=BUS, EventPattern=json.dumps(pattern))
        events.put_targets(Rule=name, EventBusName=BUS, Targets=[{"Id": "q", "Arn": arn}])
        return url

    # ---- the merge ---------------------------------------------------------------------

    def merge(self, table, rows, *, baseline=False) -> Outcome:
        """Upload rows (dicts or models) as staging (or baseline), observed now as the ingest
        marks its files (`observed-at`), and run the real merge on that version."""
        spec = TABLES[table]
        report = validate_rows(spec, rows, table)
        assert report.problems == []
        key = baseline_key(table) if baseline else staging_key(table)
        put = self.s3.put_object(
            Bucket=BUCKET,
            Key=key,
            Body=dump_rows(spec, report.rows),
            Metadata=observed_at_metadata(datetime.now(UTC)),
        )
        return self._merge_version(table, key, put.get("VersionId"))

    def merge_file(self, table, data: bytes, observed: datetime | None = None) -> Outcome:
        """Upload a staging file's bytes as they are (a log-mode file's `_op`/`_lsn` columns
        included), observed at `observed` (default now), and run the real merge on it."""
        put = self.s3.put_object(
            Bucket=BUCKET,
            Key=staging_key(table),
            Body=data,
            Metadata=observed_at_metadata(observed or datetime.now(UTC)),
        )
        return self._merge_version(table, staging_key(table), put.get("VersionId"))

    def _merge_version(self, table, key, version_id) -> Outcome:
        settings = MergeSettings(
            bucket_name=BUCKET, table_name=table, event_bus_name=BUS, dlq_url=self.dlq_url
        )
        service = MergeService(
            settings, BucketStore(BUCKET), EventPublisher(BUS), MessageQueue(self.dlq_url)
        )
        outcome = service.process(ObjectRef(BUCKET, key, version_id, message_body="{}"))
        assert outcome is not None
        return outcome

    # ---- the transform -----------------------------------------------------------------

    def receive(self, url=None):
        messages: list[Any] = []
        while True:
            got = self.sqs.receive_message(
                QueueUrl=url or self.queue_url, MaxNumberOfMessages=10, AttributeNames=["All"]
            ).get("Messages", [])
            if not got:
                return messages
            messages += got
            for m in got:
                self.sqs.delete_message(
                    QueueUrl=url or self.queue_url, ReceiptHandle=m["ReceiptHandle"]
                )

    def invoke(self, bodies):
        """The transform handler on one SQS event holding these message bodies."""
        event = {
            "Records": [
                {
                    "messageId": f"m{i}",
                    "receiptHandle": f"r{i}",
                    "body": body,
                    "attributes": {
                        "ApproximateReceiveCount": "1",
                        "SentTimestamp": "1",
                        "SenderId": "x",
                        "ApproximateFirstReceiveTimestamp": "1",
                    },
                    "messageAttributes": {},
                    "md5OfBody": "x",
                    "eventSource": "aws:sqs",
                    "eventSourceARN": "arn:aws:sqs:eu-west-2:123456789012:q",
                    "awsRegion": REGION,
                }
                for i, body in enumerate(bodies)
            ]
        }
        response = transform_handler.handler(event, Context())
        return [f["itemIdentifier"] for f in response["batchItemFailures"]]

    def deliver(self):
        """Every merge event routed so far, to the transform, ten at a time."""
        bodies = [m["Body"] for m in self.receive()]
        for start in range(0, len(bodies), 10):
            assert self.invoke(bodies[start : start + 10]) == []
        self.delivered += bodies
        return bodies

    def updates(self):
        """The WarehouseUpdated events the transform put on the bus."""
        return [json.loads(m["Body"]) for m in self.receive(self.updates_url)]

    # ---- the warehouse -----------------------------------------------------------------

    def table(self, name):
        return self.service.read_table(name)

    def files(self):
        """Every warehouse object's bytes, by key."""
        keys = sorted(self.store.keys("warehouse/"))
        return {k: self.store.get(k).data for k in keys}
