"""A moto pipeline for the merge: bucket → notification → SQS → handler → bus rule → queue.

moto does not invoke Lambda, so `deliver` plays the event source mapping: it receives with
`AttributeNames=['All']`, builds the SQS event Lambda would send, calls the real handler,
deletes what succeeded and makes the failures visible again (as a visibility timeout would).
Run it under `ops.local.moto_edge.aws_like_moto()` (the `aws` fixture does): the merge reads
the versionId, eventTime and sequencer AWS's notifications carry.

Faults and interleavings are injected at the AWS-call level: `S3Hooks` (botocore event hooks
on a service's own client) for new tests; `FaultyStore` (the Nth BucketStore write) for the
crash matrix.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, cast

import boto3
from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders

from services.merge import handler as merge_handler
from services.merge.service import MergeService
from services.merge.settings import MergeSettings
from services.merge.source import ObjectRef
from shared.commitlog import BATCH_METADATA, REPLAY_OF_METADATA, SEQ_METADATA, log_prefix
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
from shared.partitions import unpack_partition
from shared.queues import MessageQueue
from shared.reader import read_latest
from shared.rows import dump_rows, row_json
from shared.schema_state import effective_spec
from shared.storage import BucketStore
from shared.tables import TABLES

BUCKET = "ingest-bucket-test"
REGION = "eu-west-2"


# The layouts of latest every merge invariant is tested with: one file, and partitions so
# narrow (2 keys) that a batch spans several of them.
LAYOUTS = {"single": None, "partitioned": 2}


@contextmanager
def registry_entry(table: str, **changes: Any) -> Iterator[None]:
    """The registry with `table`'s entry changed (e.g. `schema_policy=...`) for the duration,
    as a deploy of a changed registry would."""
    registry = cast(dict[str, Any], TABLES)
    spec = registry[table]
    registry[table] = replace(spec, **changes)
    try:
        yield
    finally:
        registry[table] = spec


def table_partitions(table: str, rows_per_partition: int | None) -> AbstractContextManager[None]:
    """The registry with `table` partitioned (None: one file) for the duration."""
    return registry_entry(table, rows_per_partition=rows_per_partition)


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

    def keys(self, prefix):
        return iter(
            self._read(f"list {prefix}", lambda: list(super(FaultyStore, self).keys(prefix)))
        )

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


class FaultyDeadLetters(MessageQueue):
    """Shares the store's write counter too: the DLQ send is a step of a rejection."""

    def __init__(self, url, store: FaultyStore, client=None):
        super().__init__(url, client)
        self.store = store

    def send(self, body):
        return self.store._write("send", lambda: super(FaultyDeadLetters, self).send(body))


@dataclass(frozen=True)
class Call:
    """One AWS call a hooked client made: its operation, the key(s) it names, its status
    (None before the answer)."""

    operation: str
    key: str
    status: int | None = None


@dataclass
class _Rule:
    operation: str
    prefix: str
    action: Callable[[Call], None]
    after: bool
    times: int | None  # None: every matching call


class S3Hooks:
    """Faults and interleavings at the AWS-call level: botocore event hooks on one client.

    Every call the client makes is recorded in `calls` as "<Operation> <key>". `before` runs
    an action just before a matching call is sent (raise from it: the call is never made);
    `after` runs one once its answer is in, whatever the status (raise: the call was made,
    then the process died). An action may also run another merge there (an interleaving).
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls: list[str] = []
        self._rules: list[_Rule] = []
        client.meta.events.register("provide-client-params", self._before_call)
        client.meta.events.register("after-call", self._after_call)

    def before(self, operation, prefix="", action=None, *, times: int | None = 1):
        self._rules.append(_Rule(operation, prefix, action or crash, False, times))
        return self

    def after(self, operation, prefix="", action=None, *, times: int | None = 1):
        self._rules.append(_Rule(operation, prefix, action or crash, True, times))
        return self

    def _before_call(self, params, model, context, **_):
        key = _key_of(params)
        context["hooked_key"] = key
        self.calls.append(f"{model.name} {key}".rstrip())
        self._fire(Call(model.name, key), after=False)

    def _after_call(self, http_response, model, context, **_):
        self._fire(Call(model.name, context.get("hooked_key", ""), http_response.status_code), True)

    def _fire(self, call: Call, after: bool) -> None:
        for rule in list(self._rules):
            if rule.after != after or rule.operation != call.operation:
                continue
            if not call.key.startswith(rule.prefix):
                continue
            if rule.times is not None:
                rule.times -= 1
                if rule.times == 0:
                    self._rules.remove(rule)
            rule.action(call)


def _key_of(params: dict[str, Any]) -> str:
    if "Key" in params:
        return str(params["Key"])
    if "Delete" in params:
        return ",".join(o["Key"] for o in params["Delete"].get("Objects", []))
    return str(params.get("Prefix", ""))


def crash(call: Call) -> None:
    """An action for `S3Hooks`: the process dies at this call."""
    raise Crash(f"{'after' if call.status is not None else 'before'} {call.operation} {call.key}")


class Pipeline:
    def __init__(self, table="staff"):
        """Under `ops.local.moto_edge.aws_like_moto()` notifications name the version, as
        AWS's do."""
        self.table = table
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
            FaultyDeadLetters(self.dlq_url, store, client=sqs),
        )

    def hooked_service(self) -> tuple[MergeService, S3Hooks]:
        """A service with its own S3 client, and `S3Hooks` on that client's calls."""
        client = boto3.client("s3", region_name=REGION)
        service = MergeService(
            self.settings,
            BucketStore(BUCKET, client),
            EventPublisher(self.bus),
            MessageQueue(self.dlq_url),
        )
        return service, S3Hooks(client)

    # ---- uploads -----------------------------------------------------------------------

    def rows_bytes(self, rows):
        return dump_rows(self.spec, rows)

    def stage(self, data, metadata=None):
        """Upload a staging file; `metadata` e.g. `observed_at_metadata(t)`, as the ingest
        sets it (else the file is observed when S3 notifies of it)."""
        return self._upload(staging_key(self.table), data, metadata)

    def upload_baseline(self, data, metadata=None):
        return self._upload(baseline_key(self.table), data, metadata)

    def replay(self, archive_key):
        """Stage an archived batch again as `ingestctl replay` does (metadata `replay-of`)."""
        return self._upload(
            staging_key(self.table), self.get(archive_key), {REPLAY_OF_METADATA: archive_key}
        )

    def _upload(self, key, data, metadata):
        data = data if isinstance(data, bytes) else self.rows_bytes(data)
        return self.s3.put_object(Bucket=BUCKET, Key=key, Body=data, Metadata=metadata or {})

    # ---- Lambda's part -----------------------------------------------------------------

    def receive(self, url=None):
        response = self.sqs.receive_message(
            QueueUrl=url or self.queue_url,
            MaxNumberOfMessages=10,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return response.get("Messages", [])

    def receive_records(self):
        """Received messages that are S3 notifications (not S3's test event)."""
        return [m for m in self.receive() if "Records" in json.loads(m["Body"])]

    def ref(self, message):
        """The ObjectRef a message names, for calling a service directly (not via Lambda)."""
        from services.merge.notifications import parse_body

        (record,) = parse_body(message["Body"]).Records  # type: ignore[union-attr]
        return ObjectRef(
            bucket=record.bucket,
            key=record.object_key,
            version_id=record.s3.object.versionId,
            message_body=message["Body"],
            event_time=record.eventTime,
            sequencer=record.s3.object.sequencer,
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

    @property
    def read_spec(self):
        """The spec readers read with: the registry's plus the columns the bucket added."""
        return effective_spec(BucketStore(BUCKET, self.s3), TABLES[self.table])

    def latest_rows(self):
        return read_latest(BucketStore(BUCKET, self.s3), self.read_spec).rows

    def latest_bytes(self):
        """latest's rows in canonical form, whichever layout holds them."""
        return dump_rows(self.spec, self.latest_rows())

    def latest_texts(self):
        return [row_json(self.spec, r) for r in self.latest_rows()]

    def history(self):
        rows, spec = [], self.read_spec
        for key in self.keys(history_prefix(self.table)):
            rows += load_history(spec, self.get(key), key)
        return rows

    def history_texts(self):
        return Counter(row_json(self.spec, h.row) for h in self.history())

    def archives(self):
        return self.keys(archive_prefix(self.table))

    def quarantined(self):
        return self.keys(quarantine_prefix(self.table))

    def staging_versions(self):
        return self._versions(staging_key(self.table))

    def baseline_versions(self):
        return self._versions(baseline_key(self.table))

    def _versions(self, key):
        response = self.s3.list_object_versions(Bucket=BUCKET, Prefix=key)
        return [v for v in response.get("Versions", []) if v["Key"] == key]

    def latest_metadata(self):
        """`merge-seq` and `merge-batch` of the object that holds latest."""
        metadata = self.s3.head_object(Bucket=BUCKET, Key=self.commit_key)["Metadata"]
        return {name: metadata.get(name) for name in (SEQ_METADATA, BATCH_METADATA)}

    def log_entries(self):
        """The table's commit log entries, in order (their keys)."""
        return self.keys(log_prefix(self.table))

    def raw_rows(self, key):
        """The rows of an object as stored (a partition uncompressed), audit columns included."""
        return json.loads(unpack_partition(self.get(key)))

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

    def all_object_versions(self, prefixes=("",)):
        """Every object version and delete marker under `prefixes` (all of the bucket)."""
        found: list[tuple[str, ...]] = []
        for prefix in prefixes:
            response = self.s3.list_object_versions(Bucket=BUCKET, Prefix=prefix)
            found += sorted(
                (v["Key"], v["VersionId"], v["ETag"]) for v in response.get("Versions", [])
            ) + sorted((m["Key"], m["VersionId"]) for m in response.get("DeleteMarkers", []))
        return found
