"""The dispatcher: plays Lambda's SQS event source, the DLQ alarm and the bus consumers.

- One poller thread per table queue long-polls (`wait_seconds`), builds the SQS event exactly
  as Lambda's event source mapping does (at most the stack's batch size), invokes that
  table's merge function, deletes the records that succeeded and leaves the failures to their
  visibility timeout, so SQS's own `maxReceiveCount` moves a repeat failure to the DLQ. A
  handler exception fails the whole batch. Messages are received with a short visibility
  timeout (`visibility_timeout`, default 2 s) so retries happen within seconds locally.
- One alarm thread watches every DLQ: on OK -> ALARM it sets the CloudWatch alarm's state and
  invokes the pause function once with a "CloudWatch Alarm State Change" event (the shape
  EventBridge delivers on AWS, reference/event_shapes.md §4).
- The `transform` consumer queue is polled like a table queue and invokes the transform
  function (when a `transform` handler is configured); every other consumer queue is drained
  and its events reported.
- One lifecycle thread plays the bucket's lifecycle rules (`ops/local/lifecycle.py`): noncurrent
  versions expire as the stack's rules say, in compressed time (`lifecycle_day_seconds`).
Every outcome goes to one callback, so `ingestctl local up` prints lines and the demo draws.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

from ops.local.functions import (
    DEFAULT_HANDLERS,
    FunctionProcess,
    FunctionSpec,
    IngestSource,
    InvokeResult,
    function_specs,
    preload,
    resolve_handler,
)
from ops.local.lifecycle import LifecyclePlayer, LifecycleRun
from ops.local.resources import LOCAL_ACCOUNT, Clients, Deployment, QueueRef, TableResources
from services.ingest.settings import DEFAULT_OVERLAP_SECONDS
from shared import deployment_facts as facts
from shared import naming
from shared.retention import LONGEST_READ_SECONDS

# A local lifecycle day: the shortest the rules allow (shared/retention.py LONGEST_READ_SECONDS).
LOCAL_LIFECYCLE_DAY_SECONDS = float(LONGEST_READ_SECONDS)
# A transform (pyarrow) takes longer than the merge's short local visibility timeout.
TRANSFORM_MIN_VISIBILITY_SECONDS = 30


@dataclass(frozen=True)
class DispatcherConfig:
    visibility_timeout: int = 2
    wait_seconds: int = 1
    alarm_poll_seconds: float = 1.0
    log_dir: Path | None = None  # function stdout/stderr; None leaves them on the console
    # The source database of the ingest function (a postgresql:// URL); None: no ingest runs.
    ingest_source: str | None = None
    # The schedule rule's rate; shorter for trials; None: the ingest runs only when asked
    # (`Dispatcher.run_ingest_now`), as the demo does to tell its story step by step.
    ingest_every_seconds: float | None = 20 * 60.0
    ingest_overlap_seconds: int = DEFAULT_OVERLAP_SECONDS
    # Tables the ingest captures from the source's log (LOG_CAPTURE_TABLES); () polls all.
    ingest_log_tables: tuple[str, ...] = ()
    # How long one day of the bucket's lifecycle rules lasts here (compressed: a local run
    # merges far faster than every 20 minutes), at least the longest read the rules protect;
    # the player passes `lifecycle_passes_per_day` times a day. None: no lifecycle.
    lifecycle_day_seconds: float | None = LOCAL_LIFECYCLE_DAY_SECONDS
    lifecycle_passes_per_day: int = 10


@dataclass(frozen=True)
class RecordOutcome:
    message_id: str
    subject: str  # the S3 key the message names, or what else it is
    receive_count: int
    ok: bool


@dataclass(frozen=True)
class Invocation:
    table: str  # the table of a merge; the consumer's name for the transform
    function: str
    records: tuple[RecordOutcome, ...]
    error: str | None
    kind: str = "merge"


@dataclass(frozen=True)
class AlarmChange:
    table: str
    alarm_name: str
    state: str
    dlq_messages: int
    pause: InvokeResult | None


@dataclass(frozen=True)
class BusEvent:
    consumer: str
    event: dict[str, Any]


@dataclass(frozen=True)
class IngestRun:
    """The schedule rule fired (or was skipped, being disabled) and the ingest function ran."""

    rule_state: str
    result: InvokeResult | None


@dataclass(frozen=True)
class DispatcherError:
    """A poller's AWS call failed; it carries on after a second."""

    thread: str
    error: str


Outcome = Invocation | AlarmChange | BusEvent | IngestRun | DispatcherError | LifecycleRun


@dataclass(frozen=True)
class QueueTrigger:
    """Lambda's SQS event source of one function, played: `queue`'s messages to the function
    in batches of at most `batch_size` (the stack's), received for `visibility_timeout`."""

    label: str  # the table of a merge; the consumer's name for the transform
    kind: str
    queue: QueueRef
    function_name: str
    batch_size: int
    visibility_timeout: int


def queue_triggers(
    deployment: Deployment, config: DispatcherConfig, *, transform: bool
) -> list[QueueTrigger]:
    """A merge trigger per table queue, and the transform's on its consumer queue."""
    triggers = [
        QueueTrigger(
            label=res.table,
            kind=facts.MERGE.service,
            queue=res.queue,
            function_name=res.function_name,
            batch_size=facts.MERGE_TRIGGER.batch_size,
            visibility_timeout=config.visibility_timeout,
        )
        for res in deployment.tables.values()
    ]
    if transform:
        triggers.append(
            QueueTrigger(
                label=naming.TRANSFORM_CONSUMER,
                kind=facts.TRANSFORM.service,
                queue=deployment.consumers[naming.TRANSFORM_CONSUMER],
                function_name=naming.transform_function_name(deployment.prefix),
                batch_size=facts.TRANSFORM_TRIGGER.batch_size,
                visibility_timeout=max(config.visibility_timeout, TRANSFORM_MIN_VISIBILITY_SECONDS),
            )
        )
    return triggers


def sqs_event(messages: list[Mapping[str, Any]], queue_arn: str, region: str) -> dict[str, Any]:
    """The event Lambda's SQS event source hands a function, from ReceiveMessage's messages."""
    return {"Records": [_sqs_record(m, queue_arn, region) for m in messages]}


def _sqs_record(message: Mapping[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": {
            name: _lambda_message_attribute(value)
            for name, value in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


def _lambda_message_attribute(value: Mapping[str, Any]) -> dict[str, Any]:
    # Lambda spells SQS message attributes in lower camel case, binary as base64 text.
    out: dict[str, Any] = {
        "stringListValues": list(value.get("StringListValues", [])),
        "binaryListValues": [
            base64.b64encode(b).decode() for b in value.get("BinaryListValues", [])
        ],
        "dataType": value["DataType"],
    }
    if "StringValue" in value:
        out["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        out["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
    return out


def failed_message_ids(result: InvokeResult, batch_ids: list[str]) -> set[str]:
    """Which records to leave on the queue, by Lambda's rules for a partial batch response.

    An error, a response that is not an object, or an itemIdentifier that is empty or not in
    the batch fails the whole batch; no response or an empty list means all succeeded.
    """
    if not result.ok:
        return set(batch_ids)
    response = result.response
    if response is None:
        return set()
    if not isinstance(response, dict):
        return set(batch_ids)
    failures = response.get("batchItemFailures") or []
    if not isinstance(failures, list):
        return set(batch_ids)
    failed: set[str] = set()
    for item in failures:
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not identifier or identifier not in batch_ids:
            return set(batch_ids)
        failed.add(identifier)
    return failed


def alarm_state_change_event(
    alarm_name: str,
    dlq_name: str,
    state: str,
    previous: str,
    region: str,
    reason: str,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The "CloudWatch Alarm State Change" event EventBridge delivers for a DLQ alarm."""
    now = now or datetime.now(UTC)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}+0000"
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "CloudWatch Alarm State Change",
        "source": "aws.cloudwatch",
        "account": LOCAL_ACCOUNT,
        "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [f"arn:aws:cloudwatch:{region}:{LOCAL_ACCOUNT}:alarm:{alarm_name}"],
        "detail": {
            "alarmName": alarm_name,
            "state": {"value": state, "reason": reason, "timestamp": stamp},
            "previousState": {"value": previous, "timestamp": stamp},
            "configuration": {
                "metrics": [
                    {
                        "id": "m1",
                        "metricStat": {
                            "metric": {
                                "namespace": "AWS/SQS",
                                "name": "ApproximateNumberOfMessagesVisible",
                                "dimensions": {"QueueName": dlq_name},
                            },
                            "period": 60,
                            "stat": "Maximum",
                        },
                    }
                ]
            },
        },
    }


def pattern_matches(pattern: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """EventBridge's matching of a pattern of exact values (moto's TestEventPattern answers
    nothing): every key's value is one of the listed ones (a list value: any of its items),
    nested objects alike."""
    for key, wanted in pattern.items():
        value = event.get(key)
        if isinstance(wanted, Mapping):
            if not isinstance(value, Mapping) or not pattern_matches(wanted, value):
                return False
        elif not any(v in wanted for v in (value if isinstance(value, list) else [value])):
            return False
    return True


def describe_message(body: str) -> str:
    """What a queue message is about: the S3 key it names, or its kind."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return "unparsable body"
    if isinstance(parsed, dict) and parsed.get("Event") == "s3:TestEvent":
        return "s3:TestEvent"
    if isinstance(parsed, dict) and "detail-type" in parsed:  # an EventBridge event
        detail = parsed.get("detail")
        table = detail.get("table", "-") if isinstance(detail, dict) else "-"
        return f"{parsed['detail-type']}:{table}"
    try:
        keys = [unquote_plus(r["s3"]["object"]["key"]) for r in parsed["Records"]]
    except (KeyError, TypeError):
        return "not an S3 notification"
    return ",".join(keys)


class Dispatcher:
    """Runs until stopped: polls the queues, invokes the functions, plays the DLQ alarms."""

    def __init__(
        self,
        deployment: Deployment,
        clients: Clients,
        endpoint_url: str,
        on_outcome: Callable[[Outcome], None],
        *,
        handlers: Mapping[str, str] = DEFAULT_HANDLERS,
        config: DispatcherConfig | None = None,
        warehouse_dsn: str | None = None,
    ) -> None:
        self.warehouse_dsn = warehouse_dsn
        self.deployment = deployment
        self.clients = clients
        self.endpoint_url = endpoint_url
        self.on_outcome = on_outcome
        self.handlers = dict(handlers)
        self.config = config or DispatcherConfig()
        self.functions: dict[str, FunctionProcess] = {}
        self.alarm_states: dict[str, str] = dict.fromkeys(deployment.tables, "OK")
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._report_lock = threading.Lock()

    def start(self) -> None:
        """Resolve the handlers (a `HandlerImportError` names a missing one), then run."""
        for path in self.handlers.values():
            resolve_handler(path)
        preload(list(self.handlers.values()))
        for spec in function_specs(
            self.deployment,
            self.endpoint_url,
            self.handlers,
            ingest=self._ingest_source(),
            warehouse_dsn=self.warehouse_dsn,
        ):
            self._add_function(spec)
        for function in self.functions.values():  # they start side by side; wait for all
            function.wait_ready()
        self._start_threads()

    def _ingest_source(self) -> IngestSource | None:
        if not self.config.ingest_source:
            return None
        return IngestSource(
            url=self.config.ingest_source,
            overlap_seconds=self.config.ingest_overlap_seconds,
            log_tables=self.config.ingest_log_tables,
        )

    def _start_threads(self) -> None:
        triggers = queue_triggers(self.deployment, self.config, transform=self.runs_transform)
        for trigger in triggers:
            self._spawn(f"poll-{trigger.label}", self._poll, trigger)
        self._spawn("dlq-alarms", self._watch_dlqs)
        polled = {trigger.queue.url for trigger in triggers}
        for consumer, queue in self.deployment.consumers.items():
            if queue.url not in polled:
                self._spawn(f"consumer-{consumer}", self._drain_consumer, consumer, queue)
        if self.config.ingest_source and self.config.ingest_every_seconds is not None:
            self._spawn("ingest-schedule", self._run_schedule, self.config.ingest_every_seconds)
        if self.config.lifecycle_day_seconds is not None:
            player = LifecyclePlayer(
                self.clients.s3,
                self.deployment.bucket,
                day_seconds=self.config.lifecycle_day_seconds,
            )
            self._spawn("lifecycle", self._play_lifecycle, player)

    @property
    def pause_function_name(self) -> str:
        return naming.pause_function_name(self.deployment.prefix)

    @property
    def ingest_function_name(self) -> str:
        return naming.ingest_function_name(self.deployment.prefix)

    @property
    def transform_function_name(self) -> str:
        return naming.transform_function_name(self.deployment.prefix)

    @property
    def runs_transform(self) -> bool:
        return "transform" in self.handlers

    def stop(self) -> None:
        """Stop within seconds: a poller ends at its next long-poll; an invocation still in
        flight after that is cut short, as Lambda does to an instance at shutdown."""
        self._stop.set()
        self._join_threads(within=self.config.wait_seconds + 2)
        for function in self.functions.values():
            function.close()
        self._join_threads(within=5)

    def _join_threads(self, within: float) -> None:
        # One deadline for all: joining each in turn with its own timeout adds them up.
        deadline = time.monotonic() + within
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    # -- internals ---------------------------------------------------------------------------
    def _add_function(self, spec: FunctionSpec) -> None:
        log_dir = self.config.log_dir
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
        function = FunctionProcess(spec, log_dir / f"{spec.name}.log" if log_dir else None)
        function.start()
        self.functions[spec.name] = function

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=self._guard, args=(target, *args), name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _guard(self, target: Callable[..., None], *args: Any) -> None:
        # A poller must outlive a failed AWS call (the endpoint shutting down, a hiccup).
        while not self._stop.is_set():
            try:
                target(*args)
            except Exception as exc:
                if self._stop.is_set():
                    return
                self._report(DispatcherError(threading.current_thread().name, repr(exc)))
                self._stop.wait(1)

    def _report(self, outcome: Outcome) -> None:
        with self._report_lock:
            self.on_outcome(outcome)

    def _poll(self, trigger: QueueTrigger) -> None:
        while not self._stop.is_set():
            messages = self.clients.sqs.receive_message(
                QueueUrl=trigger.queue.url,
                MaxNumberOfMessages=trigger.batch_size,
                WaitTimeSeconds=self.config.wait_seconds,
                VisibilityTimeout=trigger.visibility_timeout,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            if messages:
                self._invoke(trigger, list(messages))

    def _invoke(self, trigger: QueueTrigger, messages: list[Mapping[str, Any]]) -> None:
        queue = trigger.queue
        event = sqs_event(messages, queue.arn, self.deployment.region)
        result = self.functions[trigger.function_name].invoke(event)
        ids = [m["MessageId"] for m in messages]
        failed = failed_message_ids(result, ids)
        done = [m for m in messages if m["MessageId"] not in failed]
        for start in range(0, len(done), 10):
            self.clients.sqs.delete_message_batch(
                QueueUrl=queue.url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(done[start : start + 10])
                ],
            )
        records = tuple(
            RecordOutcome(
                message_id=m["MessageId"],
                subject=describe_message(m["Body"]),
                receive_count=int(m.get("Attributes", {}).get("ApproximateReceiveCount", "0")),
                ok=m["MessageId"] not in failed,
            )
            for m in messages
        )
        self._report(
            Invocation(trigger.label, trigger.function_name, records, result.error, trigger.kind)
        )

    def _watch_dlqs(self) -> None:
        while not self._stop.is_set():
            for res in self.deployment.tables.values():
                attributes = self.clients.sqs.get_queue_attributes(
                    QueueUrl=res.dlq.url, AttributeNames=["ApproximateNumberOfMessages"]
                )["Attributes"]
                count = int(attributes.get("ApproximateNumberOfMessages", "0"))
                state = "ALARM" if count > 0 else "OK"
                if state != self.alarm_states[res.table]:
                    self._alarm_transition(res, state, count)
            self._stop.wait(self.config.alarm_poll_seconds)

    def _alarm_transition(self, res: TableResources, state: str, count: int) -> None:
        previous = self.alarm_states[res.table]
        self.alarm_states[res.table] = state
        reason = (
            f"Threshold Crossed: 1 datapoint [{float(count)}] was "
            f"{'greater than' if count else 'not greater than'} the threshold (0.0)."
        )
        self.clients.cloudwatch.set_alarm_state(
            AlarmName=res.alarm_name,
            StateValue="ALARM" if state == "ALARM" else "OK",
            StateReason=reason,
        )
        event = alarm_state_change_event(
            res.alarm_name, res.dlq.name, state, previous, self.deployment.region, reason
        )
        pause = None
        if self._pause_rule_takes(event):  # on AWS: ALARM only (facts.pause_pattern)
            pause = self.functions[self.pause_function_name].invoke(event)
        self._report(AlarmChange(res.table, res.alarm_name, state, count, pause))

    def _pause_rule_takes(self, event: dict[str, Any]) -> bool:
        """Whether EventBridge hands `event` to the pause function: its rule (the stack's,
        created by `create_resources`) is enabled and its pattern matches."""
        rule = self.clients.events.describe_rule(
            Name=naming.pause_rule_name(self.deployment.prefix)
        )
        return rule["State"] == "ENABLED" and pattern_matches(
            json.loads(rule["EventPattern"]), event
        )

    def _drain_consumer(self, consumer: str, queue: QueueRef) -> None:
        while not self._stop.is_set():
            messages = self.clients.sqs.receive_message(
                QueueUrl=queue.url, MaxNumberOfMessages=10, WaitTimeSeconds=self.config.wait_seconds
            ).get("Messages", [])
            for message in messages:
                try:
                    event = json.loads(message["Body"])
                except ValueError:
                    event = {"detail-type": "unparsable", "body": message["Body"]}
                self._report(BusEvent(consumer, event))
                self.clients.sqs.delete_message(
                    QueueUrl=queue.url, ReceiptHandle=message["ReceiptHandle"]
                )

    def _play_lifecycle(self, player: LifecyclePlayer) -> None:
        every = player.day_seconds / max(self.config.lifecycle_passes_per_day, 1)
        while not self._stop.wait(every):
            run = player.run_once()
            if run.versions or run.delete_markers:
                self._report(run)

    def run_ingest_now(self) -> IngestRun:
        """Fire the schedule rule once, as EventBridge would: nothing when it is disabled."""
        state = self.clients.events.describe_rule(
            Name=self.deployment.schedule_rule, EventBusName="default"
        )["State"]
        result = None
        if state == "ENABLED":
            event = scheduled_event(self.deployment.schedule_rule, self.deployment.region)
            result = self.functions[self.ingest_function_name].invoke(event)
        run = IngestRun(state, result)
        self._report(run)
        return run

    def _run_schedule(self, every_seconds: float) -> None:
        # EventBridge fires an enabled rule at its rate: first at start, then every period. A
        # disabled rule (ingest paused) fires nothing; the ingest also checks the pause itself.
        while not self._stop.is_set():
            self.run_ingest_now()
            self._stop.wait(every_seconds)


def scheduled_event(rule_name: str, region: str) -> dict[str, Any]:
    """What EventBridge sends a function on a schedule rule ("Scheduled Event")."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": LOCAL_ACCOUNT,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [f"arn:aws:events:{region}:{LOCAL_ACCOUNT}:rule/{rule_name}"],
        "detail": {},
    }
