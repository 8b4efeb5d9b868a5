"""A moto pipeline for the merge: bucket → notification → SQS → handler → bus rule → queue.

moto does not invoke Lambda, so `deliver` plays the event source mapping: it receives with
`AttributeNames=['All']`, builds the SQS event Lambda would send, calls the real handler,
deletes what succeeded and makes the failures visible again (as a visibility timeout would).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, cast
from urllib.parse import unquote_plus

import boto3
from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders

from services.merge import handler as merge_handler
from services.merge.service import MergeService
from services.merge.settings import MergeSettings
from shared.events import EventPublisher
from shared.history import load_history
from shared.layout import (
    archive_prefix,
    baseline_key,
    history_prefix,
    latest_key,
    latest_manifest_key,
    quarantine_prefix,
    staging_key,
)
from shared.naming import EVENT_SOURCE, event_bus_name, merge_dlq_name, merge_queue_name
from shared.queues import MessageQueue
from shared.reader import read_latest
from shared.rows import dump_rows, row_json
from shared.storage import BucketStore
from shared.tables import TABLES

BUCKET = "ingest-bucket-test"
REGION = "eu-west-2"


# The layouts of latest every merge invariant is tested with: one file, and partitions so
# narrow (2 keys) that a batch spans several of them.
LAYOUTS = {"single": None, "partitioned": 2}


@contextmanager
def table_partitions(table: str, rows_per_partition: int | None) -> Iterator[None]:
    """The registry with `table` partitioned (None: one file) for the duration."""
    registry = cast(dict[str, Any], TABLES)
    spec = registry[table]
    registry[table] = replace(spec, rows_per_partition=rows_per_partition)
    try:
        yield
    finally:
        registry[table] = spec


@dataclass
class LambdaContext:
    function_name: str = "ingest-merge-test"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:eu-west-2:123456789012:function:ingest-merge"
    aws_request_id: str = "req-1"


@dataclass
class Delivery:
    failed: list[str] = field(default_factory=list)
    handled: int = 0


class _RawBody:
    """Just enough of urllib3's response for botocore to read a body from."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Any:
        yield self.body

    def read(self, *_: Any) -> bytes:
        return self.body


def s3_answer(request: Any, status: int, body: bytes = b"") -> AWSResponse:
    """A response S3 could send, given to botocore instead of moto's (from a before-send hook)
    for what moto does not do: throttling, or a 403 for a missing key."""
    return AWSResponse(request.url, status, HTTPHeaders(), _RawBody(body))


def naming_version(body: str, version_id: str | Callable[[dict[str, Any]], str]) -> str:
    """The notification as AWS sends it for a versioned bucket: with the versionId (given, or
    found by a function of the record's `s3.object`)."""
    notification = json.loads(body)
    for record in notification.get("Records", []):
        obj = record["s3"]["object"]
        obj["versionId"] = version_id(obj) if callable(version_id) else version_id
    return json.dumps(notification)


class Crash(RuntimeError):
    """An injected failure: the process died here."""


class FaultyStore(BucketStore):
    """A BucketStore that dies on its Nth write (put / delete), before or after doing it.

    With `count_reads`, reads (get, head, version listings) count as calls too, so the Nth
    call may be a read: the adapter raises instead of answering.
    """

    def __init__(self, bucket, crash_at=None, after=False, client=None, count_reads=False):
        super().__init__(bucket, client)
        self.crash_at = crash_at
        self.after = after
        self.count_reads = count_reads
        self.writes = []

    def _write(self, name, do):
        self.writes.append(name)
        number = len(self.writes)
        if number == self.crash_at and not self.after:
            raise Crash(f"before write {number} ({name})")
        try:
            result = do()
        except Exception:  # the call failed by itself (e.g. a 404): the process still dies
            if number == self.crash_at and self.after:
                raise Crash(f"after call {number} ({name})") from None
            raise
        if number == self.crash_at and self.after:
            raise Crash(f"after write {number} ({name})")
        return result

    def _read(self, name, do):
        return self._write(name, do) if self.count_reads else do()

    def get(self, key, version_id=None):
        return self._read(f"get {key}", lambda: super(FaultyStore, self).get(key, version_id))

    def exists(self, key):
        return self._read(f"head {key}", lambda: super(FaultyStore, self).exists(key))

    def metadata(self, key, version_id=None):
        return self._read(f"head {key}", lambda: super(FaultyStore, self).metadata(key, version_id))

    def versions(self, key):
        return self._read(f"versions {key}", lambda: super(FaultyStore, self).versions(key))

    def put(self, key, data, **kwargs):
        return self._write(f"put {key}", lambda: super(FaultyStore, self).put(key, data, **kwargs))

    def delete_version(self, key, version_id):
        return self._write(
            f"delete {key}", lambda: super(FaultyStore, self).delete_version(key, version_id)
        )

    def delete(self, key):
        return self._write(f"delete {key}", lambda: super(FaultyStore, self).delete(key))

    def delete_keys(self, keys):
        return self._write(
            f"delete {','.join(keys)}", lambda: super(FaultyStore, self).delete_keys(keys)
        )


class FaultyPublisher(EventPublisher):
    """Shares the store's write counter, so 'the Nth step' covers the events too."""

    def __init__(self, bus, store: FaultyStore, client=None):
        super().__init__(bus, client)
        self.store = store

    def publish(self, details):
        return self.store._write("publish", lambda: super(FaultyPublisher, self).publish(details))


class Pipeline:
    def __init__(self, table="staff", lease_seconds=None, names_versions=False):
        """`lease_seconds=0` lets a redelivery take over a crashed batch at once;
        `names_versions`: notifications name the object version, as AWS's do (moto's not)."""
        self.table = table
        self.names_versions = names_versions
        self._named_bodies: dict[str, str] = {}
        self.spec = TABLES[table]
        self.s3 = boto3.client("s3", region_name=REGION)
        self.sqs = boto3.client("sqs", region_name=REGION)
        self.events_client = boto3.client("events", region_name=REGION)
        self.s3.create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"}
        )
        self.s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        self.dlq_url = self.sqs.create_queue(QueueName=merge_dlq_name(table))["QueueUrl"]
        self.queue_url = self.sqs.create_queue(QueueName=merge_queue_name(table))["QueueUrl"]
        queue_arn = self._arn(self.queue_url)
        self.s3.put_bucket_notification_configuration(
            Bucket=BUCKET,
            NotificationConfiguration={
                "QueueConfigurations": [
                    {
                        "Id": f"{area}-{table}",
                        "QueueArn": queue_arn,
                        "Events": ["s3:ObjectCreated:*"],
                        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": key}]}},
                    }
                    for area, key in (
                        ("staging", staging_key(table)),
                        ("baseline", baseline_key(table)),
                    )
                ]
            },
        )
        self.bus = event_bus_name("test")
        self.events_client.create_event_bus(Name=self.bus)
        self.capture_url = self.sqs.create_queue(QueueName="captured-events")["QueueUrl"]
        self.events_client.put_rule(
            Name="capture-all",
            EventBusName=self.bus,
            EventPattern=json.dumps({"source": [EVENT_SOURCE]}),
        )
        self.events_client.put_targets(
            Rule="capture-all",
            EventBusName=self.bus,
            Targets=[{"Id": "q", "Arn": self._arn(self.capture_url)}],
        )
        self.settings = MergeSettings(
            bucket_name=BUCKET, table_name=table, event_bus_name=self.bus, dlq_url=self.dlq_url
        )
        if lease_seconds is not None:
            self.settings = self.settings.model_copy(update={"lease_seconds": lease_seconds})
        self.captured = []
        self.use(merge_handler.build_service(self.settings))

    def _arn(self, url):
        attrs = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        return attrs["Attributes"]["QueueArn"]

    # ---- the service under test --------------------------------------------------------

    def use(self, service):
        merge_handler.use_service(service)
        return service

    def faulty_service(
        self, crash_at=None, after=False, *, count_reads=False, s3=None, events=None, sqs=None
    ):
        """A service whose adapters die at the Nth call; clients may be given (e.g. throttled)."""
        store = FaultyStore(
            BUCKET, crash_at=crash_at, after=after, client=s3, count_reads=count_reads
        )
        return MergeService(
            self.settings,
            store,
            FaultyPublisher(self.bus, store, client=events),
            MessageQueue(self.dlq_url, client=sqs),
        )

    # ---- uploads -----------------------------------------------------------------------

    def rows_bytes(self, rows):
        return dump_rows(self.spec, rows)

    def stage(self, data):
        data = data if isinstance(data, bytes) else self.rows_bytes(data)
        return self.s3.put_object(Bucket=BUCKET, Key=staging_key(self.table), Body=data)

    def upload_baseline(self, data):
        data = data if isinstance(data, bytes) else self.rows_bytes(data)
        return self.s3.put_object(Bucket=BUCKET, Key=baseline_key(self.table), Body=data)

    # ---- Lambda's part -----------------------------------------------------------------

    def receive(self, url=None):
        response = self.sqs.receive_message(
            QueueUrl=url or self.queue_url,
            MaxNumberOfMessages=10,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages = response.get("Messages", [])
        if self.names_versions and url in (None, self.queue_url):
            for m in messages:  # decided once per message: its version may be deleted later
                if m["MessageId"] not in self._named_bodies:
                    self._named_bodies[m["MessageId"]] = self._naming_version(m["Body"])
                m["Body"] = self._named_bodies[m["MessageId"]]
        return messages

    def _naming_version(self, body):
        """The notification with the versionId AWS would give: the newest version of the key
        with the notification's ETag (each upload in these tests has its own content)."""

        def version_with_etag(obj):
            key = unquote_plus(obj["key"])
            listing = self.s3.list_object_versions(Bucket=BUCKET, Prefix=key)
            return next(
                v["VersionId"]
                for v in sorted(listing["Versions"], key=lambda v: v["LastModified"], reverse=True)
                if v["Key"] == key and v["ETag"].strip('"') == obj["eTag"].strip('"')
            )

        return naming_version(body, version_with_etag)

    def receive_records(self):
        """Received messages that are S3 notifications (not S3's test event)."""
        return [m for m in self.receive() if "Records" in json.loads(m["Body"])]

    def ref(self, message):
        """The ObjectRef a message names, for calling a service directly (not via Lambda)."""
        from services.merge.notifications import parse_body
        from services.merge.service import ObjectRef

        (record,) = parse_body(message["Body"]).Records  # type: ignore[union-attr]
        return ObjectRef(
            bucket=record.bucket,
            key=record.object_key,
            version_id=record.s3.object.versionId,
            etag=record.s3.object.eTag,
            message_body=message["Body"],
        )

    def lambda_event(self, messages):
        arn = self._arn(self.queue_url)
        return {
            "Records": [
                {
                    "messageId": m["MessageId"],
                    "receiptHandle": m["ReceiptHandle"],
                    "body": m["Body"],
                    "attributes": m["Attributes"],
                    "messageAttributes": {},
                    "md5OfBody": m["MD5OfBody"],
                    "eventSource": "aws:sqs",
                    "eventSourceARN": arn,
                    "awsRegion": REGION,
                }
                for m in messages
            ]
        }

    def invoke_with(self, service, messages):
        """Invoke with another service (e.g. a faulty one), then restore the current one."""
        current = merge_handler.get_service()
        merge_handler.use_service(service)
        try:
            return self.invoke(messages)
        finally:
            merge_handler.use_service(current)

    def invoke(self, messages):
        """Call the handler as Lambda would; settle the messages as the event source would."""
        from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

        try:
            response = merge_handler.handler(self.lambda_event(messages), LambdaContext())
            failed = [f["itemIdentifier"] for f in response["batchItemFailures"]]
        except BatchProcessingError:
            failed = [m["MessageId"] for m in messages]
        for m in messages:
            if m["MessageId"] in failed:
                self.sqs.change_message_visibility(
                    QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0
                )
            else:
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"])
        return Delivery(failed=failed, handled=len(messages) - len(failed))

    def deliver(self, rounds=1):
        """Deliver everything queued (`rounds` passes, for redelivery of failures)."""
        total = Delivery()
        for _ in range(rounds):
            messages = self.receive()
            while messages:
                result = self.invoke(messages)
                total.handled += result.handled
                total.failed += result.failed
                if result.failed:
                    break
                messages = self.receive()
        return total

    # ---- what the bucket holds ---------------------------------------------------------

    def get(self, key):
        return self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()

    def keys(self, prefix):
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    @property
    def commit_key(self):
        """The object whose conditional write commits a merge: latest, or its manifest."""
        partitioned = TABLES[self.table].rows_per_partition is not None
        return latest_manifest_key(self.table) if partitioned else latest_key(self.table)

    def latest_rows(self):
        return read_latest(BucketStore(BUCKET, self.s3), TABLES[self.table]).rows

    def latest_bytes(self):
        """latest's rows in canonical form, whichever layout holds them."""
        return dump_rows(self.spec, self.latest_rows())

    def latest_texts(self):
        return [row_json(self.spec, r) for r in self.latest_rows()]

    def history(self):
        rows = []
        for key in self.keys(history_prefix(self.table)):
            rows += load_history(self.spec, self.get(key), key)
        return rows

    def history_texts(self):
        return Counter(row_json(self.spec, h.row) for h in self.history())

    def archives(self):
        return self.keys(archive_prefix(self.table))

    def quarantined(self):
        return self.keys(quarantine_prefix(self.table))

    def staging_versions(self):
        response = self.s3.list_object_versions(Bucket=BUCKET, Prefix=staging_key(self.table))
        return [v for v in response.get("Versions", []) if v["Key"] == staging_key(self.table)]

    def dlq_bodies(self):
        return [m["Body"] for m in self.receive(self.dlq_url)]

    def events(self):
        """Every event captured so far (accumulated across calls), as delivered by the rule."""
        while messages := self.receive(self.capture_url):
            for m in messages:
                self.captured.append(json.loads(m["Body"]))
                self.sqs.delete_message(QueueUrl=self.capture_url, ReceiptHandle=m["ReceiptHandle"])
        return list(self.captured)

    def event_ids(self):
        return Counter(e["detail"]["event_id"] for e in self.events())

    def all_object_versions(self):
        response = self.s3.list_object_versions(Bucket=BUCKET)
        return sorted(
            (v["Key"], v["VersionId"], v["ETag"]) for v in response.get("Versions", [])
        ) + sorted((m["Key"], m["VersionId"]) for m in response.get("DeleteMarkers", []))
