"""The pause Lambda with a real-shaped alarm event, and the operator's redrive and resume."""

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from ops.operations import REDRIVE_ORIGIN_ATTRIBUTE, Operator, ResumeRefusedError
from services.pause.handler import handler
from shared import naming
from shared.layout import PAUSE_RECORD_KEY
from tests.aws import local_resources

FIXTURES = Path(__file__).parent.parent / "fixtures"
BUCKET = "ingest-test"


@pytest.fixture
def deployed(aws, monkeypatch):
    monkeypatch.setenv("BUCKET_NAME", BUCKET)
    monkeypatch.setenv("EVENT_BUS_NAME", naming.event_bus_name())
    monkeypatch.setenv("SCHEDULE_RULE_NAME", naming.ingest_schedule_rule_name())
    return local_resources(BUCKET, ["staff", "payment"])


def _context():
    return SimpleNamespace(
        function_name="ingest-pause",
        memory_limit_in_mb=128,
        invoked_function_arn="arn:aws:lambda:eu-west-2:123456789012:function:ingest-pause",
        aws_request_id="req-1",
    )


def _operator_events(clients, deployment):
    """The events on the operator queue now (moto's bus delivers within PutEvents)."""
    messages = clients.sqs.receive_message(
        QueueUrl=deployment.consumers["operator"].url, MaxNumberOfMessages=10
    ).get("Messages", [])
    return [json.loads(m["Body"]) for m in messages]


def _rule_state(clients):
    return clients.events.describe_rule(Name=naming.ingest_schedule_rule_name())["State"]


def test_pause_handler_disables_records_and_is_idempotent(deployed):
    clients, deployment = deployed
    event = json.loads((FIXTURES / "alarm_state_change.json").read_text())

    first = handler(event, _context())

    assert first == {"paused": True, "changed": True, "table": "staff"}
    assert _rule_state(clients) == "DISABLED"
    stored = clients.s3.get_object(Bucket=BUCKET, Key=PAUSE_RECORD_KEY)
    record = json.loads(stored["Body"].read())
    assert record["paused"] is True
    (reason,) = record["reasons"]
    assert reason["table"] == "staff"
    assert reason["cause"] == naming.dlq_alarm_name("staff")
    assert reason["queue_name"] == "ingest-staff-dlq"
    assert reason["at"].startswith("2026-11-26T09:41:00")
    (paused,) = _operator_events(clients, deployment)
    assert paused["detail-type"] == "IngestPaused"
    assert paused["detail"]["table"] == "staff"

    second = handler(event, _context())

    assert second["changed"] is False
    assert _rule_state(clients) == "DISABLED"
    versions = clients.s3.list_object_versions(Bucket=BUCKET, Prefix=PAUSE_RECORD_KEY)
    assert len(versions["Versions"]) == 1  # the record was not rewritten
    assert clients.s3.head_object(Bucket=BUCKET, Key=PAUSE_RECORD_KEY)["ETag"] == stored["ETag"]
    assert _operator_events(clients, deployment) == []


def test_pause_handler_ignores_an_alarm_going_back_to_ok(deployed):
    clients, _ = deployed
    event = json.loads((FIXTURES / "alarm_state_change.json").read_text())
    event["detail"]["state"]["value"] = "OK"
    assert handler(event, _context())["paused"] is False
    assert _rule_state(clients) == "ENABLED"


def test_resume_refuses_while_a_dlq_holds_messages_unless_forced(deployed):
    clients, deployment = deployed
    operator = Operator(BUCKET, tables=["staff", "payment"])
    operator.pause("maintenance")
    assert _rule_state(clients) == "DISABLED"
    clients.sqs.send_message(QueueUrl=deployment.tables["payment"].dlq.url, MessageBody="x")

    with pytest.raises(ResumeRefusedError, match=r"payment \(1\)"):
        operator.resume()
    assert _rule_state(clients) == "DISABLED"

    record = operator.resume(force=True)
    assert _rule_state(clients) == "ENABLED"
    assert record.paused is False
    assert operator.pause_state() == record
    assert record.reasons[0].cause == "operator: maintenance"


class _Interrupting:
    """Wraps the SQS client; raises KeyboardInterrupt at one call, like Ctrl-C there."""

    def __init__(self, client, method, nth, after_call):
        self._client, self._method, self._nth, self._after = client, method, nth, after_call
        self._calls = 0

    def __getattr__(self, name):
        real = getattr(self._client, name)
        if name != self._method:
            return real

        def call(**kwargs):
            self._calls += 1
            if self._calls == self._nth and not self._after:
                raise KeyboardInterrupt
            result = real(**kwargs)
            if self._calls == self._nth:
                raise KeyboardInterrupt
            return result

        return call


def _drain(sqs, url):
    found: list[tuple[str, str]] = []
    while True:
        messages = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        ).get("Messages", [])
        if not messages:
            return found
        for m in messages:
            found.append(
                (m["Body"], m["MessageAttributes"][REDRIVE_ORIGIN_ATTRIBUTE]["StringValue"])
            )
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


def test_redrive_fallback_interrupted_twice_then_rerun_moves_each_message_once(deployed):
    clients, deployment = deployed
    staff = deployment.tables["staff"]
    original = {}
    for i in range(7):
        sent = clients.sqs.send_message(QueueUrl=staff.dlq.url, MessageBody=f"body-{i}")
        original[sent["MessageId"]] = f"body-{i}"
    pairs = Operator(BUCKET, tables=["staff"]).queue_pairs()

    # Run 1: interrupted at the third delete from the DLQ (after its send and its marker).
    flaky = _Interrupting(clients.sqs, "delete_message", nth=3, after_call=False)
    with pytest.raises(KeyboardInterrupt):
        Operator(BUCKET, tables=["staff"], sqs=cast(Any, flaky)).redrive(pairs)
    # Run 2: interrupted just after a send returned, before its marker was written.
    flaky = _Interrupting(clients.sqs, "send_message", nth=2, after_call=True)
    with pytest.raises(KeyboardInterrupt):
        Operator(BUCKET, tables=["staff"], sqs=cast(Any, flaky)).redrive(pairs)
    # Run 3: uninterrupted.
    (result,) = Operator(BUCKET, tables=["staff"]).redrive(pairs)

    assert result.method == "copy"  # moto has no StartMessageMoveTask
    copies = _drain(clients.sqs, staff.queue.url)
    origins = [origin for _, origin in copies]
    assert set(origins) == set(original)  # nothing lost
    assert all(original[origin] == body for body, origin in copies)
    duplicated = {o for o in origins if origins.count(o) > 1}
    # Only run 2's send-before-marker window can repeat a message, and its copies say so.
    assert len(duplicated) <= 1
    assert len(copies) == len(original) + len(duplicated)
    assert clients.sqs.receive_message(QueueUrl=staff.dlq.url).get("Messages", []) == []


def test_redrive_after_an_interruption_between_send_and_delete_sends_nothing_twice(deployed):
    clients, deployment = deployed
    staff = deployment.tables["staff"]
    ids = [
        clients.sqs.send_message(QueueUrl=staff.dlq.url, MessageBody=f"b{i}")["MessageId"]
        for i in range(4)
    ]
    pairs = Operator(BUCKET, tables=["staff"]).queue_pairs()
    for nth in (2, 1):  # interrupted at a delete, twice
        flaky = _Interrupting(clients.sqs, "delete_message", nth=nth, after_call=False)
        with pytest.raises(KeyboardInterrupt):
            Operator(BUCKET, tables=["staff"], sqs=cast(Any, flaky)).redrive(pairs)
    Operator(BUCKET, tables=["staff"]).redrive(pairs)

    origins = sorted(origin for _, origin in _drain(clients.sqs, staff.queue.url))
    assert origins == sorted(ids)  # exactly once each


class _FailingAgain:
    """Wraps the SQS client: every message sent back to the source queue fails again at once
    and returns to the DLQ carrying its attributes, as a still-bad file's message would."""

    def __init__(self, client, source_url, dlq_url):
        self._client, self._source, self._dlq = client, source_url, dlq_url

    def __getattr__(self, name):
        return getattr(self._client, name)

    def send_message(self, **kwargs):
        sent = self._client.send_message(**kwargs)
        if kwargs["QueueUrl"] == self._source:
            self._client.send_message(**{**kwargs, "QueueUrl": self._dlq})
        return sent


def test_redrive_moves_what_was_there_and_does_not_chase_messages_failing_again(deployed):
    clients, deployment = deployed
    staff = deployment.tables["staff"]
    for i in range(3):
        clients.sqs.send_message(QueueUrl=staff.dlq.url, MessageBody=f"still-bad-{i}")
    failing = _FailingAgain(clients.sqs, staff.queue.url, staff.dlq.url)
    operator = Operator(BUCKET, tables=["staff"], sqs=cast(Any, failing))

    (result,) = operator.redrive()

    assert result.moved == 3
    back = clients.sqs.get_queue_attributes(
        QueueUrl=staff.dlq.url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]["ApproximateNumberOfMessages"]
    assert back == "3"  # the three failed again and wait in the DLQ for the operator
