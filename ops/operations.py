"""Operator actions: redrive, pause, resume. The same code acts on AWS and on the local runtime.

boto3 clients are created on first use; the endpoint comes from boto3's own AWS_ENDPOINT_URL
(the local runtime sets it), so nothing here knows which one it talks to.

Redrive uses SQS StartMessageMoveTask where the API exists. Where it does not (moto), it falls
back to a receive / send / delete loop made safe to interrupt and run again:
- send first, then delete: an interruption can never lose a message, only leave it in the DLQ;
- after each send, a marker `_state/redrive/<dlq>/<message id>` is written (create-only); a
  rerun that meets a DLQ message with a marker deletes it without sending it again, so an
  interruption between send and delete does not duplicate it;
- each copy carries the message attribute `ingest-redrive-origin` = the DLQ message's id (or
  the origin it already carried), so the one window left (an interruption after the send but
  before the marker) yields a copy recognisable as the same message; and the merge applies a
  message's object version at most once anyway (DESIGN invariant 2), so the effect is once.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal, Protocol

import boto3
from botocore.exceptions import ClientError

from services.pause.adapters import BucketPauseState, RuleSchedule, pause_publisher
from services.pause.logic import PauseOutcome, pause_ingest, resume_record
from services.pause.models import PauseReason, PauseRecord
from shared import naming
from shared.layout import state_key
from shared.storage import BucketStore, PreconditionFailedError
from shared.tables import TABLES

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_sqs import SQSClient

REDRIVE_ORIGIN_ATTRIBUTE = "ingest-redrive-origin"
MOVE_TASK_POLL_SECONDS = 2.0


class ResumeRefusedError(Exception):
    """Resume was asked while a DLQ still holds messages (and force was not given)."""


@dataclass(frozen=True)
class QueuePair:
    """A table's DLQ and the queue its messages go back to."""

    table: str
    dlq_url: str
    source_url: str

    @property
    def dlq_name(self) -> str:
        return self.dlq_url.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class RedriveResult:
    pair: QueuePair
    method: Literal["move-task", "copy"]
    moved: int
    skipped: int = 0  # DLQ messages already sent by an interrupted earlier run


class RedriveLedger(Protocol):
    def was_sent(self, dlq_name: str, message_id: str) -> bool: ...

    def mark_sent(self, dlq_name: str, message_id: str, copy_id: str) -> None: ...


class BucketRedriveLedger:
    """Markers of messages already sent back, under `_state/redrive/` of the ingest bucket."""

    def __init__(self, store: BucketStore) -> None:
        self.store = store

    @staticmethod
    def key(dlq_name: str, message_id: str) -> str:
        return state_key("redrive", dlq_name, f"{message_id}.json")

    def was_sent(self, dlq_name: str, message_id: str) -> bool:
        return self.store.exists(self.key(dlq_name, message_id))

    def mark_sent(self, dlq_name: str, message_id: str, copy_id: str) -> None:
        marker = {"dlq": dlq_name, "message_id": message_id, "copy_id": copy_id}
        # Already marked by an earlier run: that marker says the same thing.
        with contextlib.suppress(PreconditionFailedError):
            self.store.put(
                self.key(dlq_name, message_id), json.dumps(marker).encode(), create_only=True
            )


@dataclass(frozen=True)
class DlqDepth:
    table: str
    visible: int
    in_flight: int

    @property
    def total(self) -> int:
        return self.visible + self.in_flight


class Operator:
    """Acts on one deployment: its bucket, its prefix's queues, rule and bus."""

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = naming.DEFAULT_PREFIX,
        tables: Iterable[str] = tuple(TABLES),
        sqs: SQSClient | None = None,
        events: EventBridgeClient | None = None,
        store: BucketStore | None = None,
        schedule_rule: str | None = None,
        event_bus: str | None = None,
        queue_urls: Mapping[str, tuple[str, str]] | None = None,
    ) -> None:
        """Names not given (schedule rule, bus, each table's (queue URL, DLQ URL)) come from
        `shared.naming` with `prefix`; `ops.deployment` passes them from a stack's outputs."""
        self.bucket = bucket
        self.prefix = prefix
        self.tables = tuple(tables)
        self._schedule_rule = schedule_rule
        self.event_bus = event_bus or naming.event_bus_name(prefix)
        self._queue_urls = dict(queue_urls or {})
        self._sqs = sqs
        self._events = events
        self.store = store or BucketStore(bucket)
        self._move_task_supported: bool | None = None  # learnt on first try

    @cached_property
    def sqs(self) -> SQSClient:
        return self._sqs or boto3.client("sqs")

    @cached_property
    def events(self) -> EventBridgeClient:
        return self._events or boto3.client("events")

    @property
    def schedule_rule(self) -> str:
        return self._schedule_rule or naming.ingest_schedule_rule_name(self.prefix)

    def schedule_enabled(self) -> bool:
        return RuleSchedule(self.schedule_rule, self.events).is_enabled()

    # -- queues ------------------------------------------------------------------------------
    def queue_pairs(self, tables: Iterable[str] | None = None) -> list[QueuePair]:
        pairs = []
        for t in tables or self.tables:
            if t in self._queue_urls:
                source_url, dlq_url = self._queue_urls[t]
            else:
                source_url = self._url(naming.merge_queue_name(t, self.prefix))
                dlq_url = self._url(naming.merge_dlq_name(t, self.prefix))
            pairs.append(QueuePair(table=t, dlq_url=dlq_url, source_url=source_url))
        return pairs

    def dlq_depths(self, tables: Iterable[str] | None = None) -> list[DlqDepth]:
        depths = []
        for pair in self.queue_pairs(tables):
            attributes = self.sqs.get_queue_attributes(
                QueueUrl=pair.dlq_url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )["Attributes"]
            depths.append(
                DlqDepth(
                    pair.table,
                    int(attributes.get("ApproximateNumberOfMessages", "0")),
                    int(attributes.get("ApproximateNumberOfMessagesNotVisible", "0")),
                )
            )
        return depths

    def _url(self, name: str) -> str:
        return self.sqs.get_queue_url(QueueName=name)["QueueUrl"]

    def _arn(self, url: str) -> str:
        return self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]

    # -- redrive -----------------------------------------------------------------------------
    def redrive(
        self,
        pairs: Sequence[QueuePair] | None = None,
        *,
        use_move_task: bool = True,
        wait: bool = True,
        visibility_timeout: int = 30,
    ) -> list[RedriveResult]:
        """Move every DLQ message back to its source queue (see the module doc for how)."""
        results = []
        for pair in pairs if pairs is not None else self.queue_pairs():
            try_task = use_move_task and self._move_task_supported is not False
            moved = self._move_task(pair, wait) if try_task else None
            if try_task:
                self._move_task_supported = moved is not None
            if moved is not None:
                results.append(RedriveResult(pair, "move-task", moved))
            else:
                ledger = BucketRedriveLedger(self.store)
                results.append(self._copy_back(pair, ledger, visibility_timeout))
        return results

    def _move_task(self, pair: QueuePair, wait: bool) -> int | None:
        """Redrive with StartMessageMoveTask; None when the endpoint lacks the API (moto)."""
        source_arn = self._arn(pair.dlq_url)
        try:
            self.sqs.start_message_move_task(
                SourceArn=source_arn, DestinationArn=self._arn(pair.source_url)
            )
        except NotImplementedError:  # moto in-process
            return None
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if status == 500 or code in {"InvalidAction", "UnsupportedOperation"}:
                return None  # moto's server answers an unimplemented action with a 500
            raise
        if not wait:
            return 0
        while True:
            tasks = self.sqs.list_message_move_tasks(SourceArn=source_arn, MaxResults=1)
            task = tasks["Results"][0] if tasks.get("Results") else {}
            if task.get("Status") != "RUNNING":
                if task.get("Status") not in {None, "COMPLETED"}:
                    raise RuntimeError(
                        f"redrive of {pair.dlq_name} ended {task.get('Status')}: "
                        f"{task.get('FailureReason', '')}"
                    )
                return int(task.get("ApproximateNumberOfMessagesMoved", 0))
            time.sleep(MOVE_TASK_POLL_SECONDS)

    def _copy_back(
        self, pair: QueuePair, ledger: RedriveLedger, visibility_timeout: int
    ) -> RedriveResult:
        moved = skipped = 0
        # Origins sent back by this run: a message that fails again while we run comes back
        # to the DLQ with the same origin, and is left there (else we would chase it forever).
        sent_now: set[str] = set()
        while True:
            messages = self.sqs.receive_message(
                QueueUrl=pair.dlq_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=1,  # a long poll asks every SQS server: empty means empty
                VisibilityTimeout=visibility_timeout,
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            returned = [m for m in messages if _origin(m) in sent_now]
            pending = [m for m in messages if _origin(m) not in sent_now]
            self._release(pair.dlq_url, returned)
            if not pending:
                return RedriveResult(pair, "copy", moved, skipped)
            try:
                while pending:
                    message = pending[0]
                    if ledger.was_sent(pair.dlq_name, message["MessageId"]):
                        skipped += 1
                    else:
                        copy_id = self.sqs.send_message(
                            QueueUrl=pair.source_url,
                            MessageBody=message["Body"],
                            MessageAttributes=_copy_attributes(message),
                        )["MessageId"]
                        ledger.mark_sent(pair.dlq_name, message["MessageId"], copy_id)
                        sent_now.add(_origin(message))
                        moved += 1
                    self.sqs.delete_message(
                        QueueUrl=pair.dlq_url, ReceiptHandle=message["ReceiptHandle"]
                    )
                    pending.pop(0)
            except BaseException:
                self._release(pair.dlq_url, pending)
                raise

    def _release(self, url: str, messages: list[Any]) -> None:
        # Interrupted: make what we still hold visible again at once (best effort; if this
        # fails too, the messages come back when their visibility timeout ends).
        try:
            for message in messages:
                self.sqs.change_message_visibility(
                    QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
                )
        except Exception:
            pass  # the original interruption is the error to report

    # -- pause / resume ----------------------------------------------------------------------
    def pause_state(self) -> PauseRecord | None:
        return BucketPauseState(self.store).read()[0]

    def pause(self, reason: str) -> PauseOutcome:
        """Pause ingest by hand: the same steps the DLQ alarm's pause function takes."""
        return pause_ingest(
            PauseReason(
                cause=f"operator: {reason}",
                table=None,
                queue_name=None,
                at=datetime.now(UTC),
                message=reason,
            ),
            state=BucketPauseState(self.store),
            schedule=RuleSchedule(self.schedule_rule, self.events),
            publisher=pause_publisher(self.event_bus, self.events),
            schedule_rule=self.schedule_rule,
        )

    def resume(self, *, force: bool = False) -> PauseRecord:
        """Enable the schedule again; refused while any DLQ holds messages, unless forced."""
        waiting = [d for d in self.dlq_depths() if d.total]
        if waiting and not force:
            listed = ", ".join(f"{d.table} ({d.total})" for d in waiting)
            raise ResumeRefusedError(
                f"DLQs still hold messages: {listed}; redrive or fix them first, or force"
            )
        RuleSchedule(self.schedule_rule, self.events).enable()
        state = BucketPauseState(self.store)
        for _ in range(5):
            record, etag = state.read()
            updated = resume_record(record, datetime.now(UTC))
            try:
                state.write(updated, etag)
            except PreconditionFailedError:
                continue
            return updated
        raise PreconditionFailedError("pause record still contended after 5 tries")


def _origin(message: Any) -> str:
    """The id of the DLQ message a message was first redriven from (its own id if never)."""
    attribute = message.get("MessageAttributes", {}).get(REDRIVE_ORIGIN_ATTRIBUTE, {})
    return str(attribute.get("StringValue") or message["MessageId"])


def _copy_attributes(message: Any) -> dict[str, Any]:
    attributes = {
        name: {k: v for k, v in value.items() if k in {"DataType", "StringValue", "BinaryValue"}}
        for name, value in message.get("MessageAttributes", {}).items()
    }
    attributes[REDRIVE_ORIGIN_ATTRIBUTE] = {"DataType": "String", "StringValue": _origin(message)}
    return attributes
