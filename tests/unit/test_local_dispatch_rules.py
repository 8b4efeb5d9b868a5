"""The pure parts of the local dispatcher: Lambda's SQS event, its partial-batch rules, the
alarm event it plays, and the pause function's reading of that event."""

import base64
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ops.local.dispatcher import (
    alarm_state_change_event,
    describe_message,
    failed_message_ids,
    pattern_matches,
    sqs_event,
)
from ops.local.functions import HandlerImportError, InvokeResult, resolve_handler
from services.pause.logic import reason_from_alarm, table_for_queue
from services.pause.models import AlarmStateChangeEvent
from shared import naming
from shared.deployment_facts import notification_prefixes, pause_pattern
from shared.tables import TABLES

FIXTURES = Path(__file__).parent.parent / "fixtures"
IDS = ["m1", "m2", "m3"]


def _shape(value):
    """The structure of a JSON value: keys and types, not the values."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value[:1]]
    return type(value).__name__


@pytest.mark.parametrize(
    ("result", "failed"),
    [
        (InvokeResult(response={"batchItemFailures": []}), set()),
        (InvokeResult(response=None), set()),
        (InvokeResult(response={}), set()),
        (InvokeResult(response={"batchItemFailures": [{"itemIdentifier": "m2"}]}), {"m2"}),
        (InvokeResult(error="Traceback ... RuntimeError"), set(IDS)),
        (InvokeResult(response={"batchItemFailures": [{"itemIdentifier": "zz"}]}), set(IDS)),
        (InvokeResult(response={"batchItemFailures": [{"itemIdentifier": ""}]}), set(IDS)),
        (InvokeResult(response={"batchItemFailures": [{"id": "m1"}]}), set(IDS)),
        (InvokeResult(response="done"), set(IDS)),
    ],
)
def test_partial_batch_response_follows_lambda_rules(result, failed):
    assert failed_message_ids(result, IDS) == failed


def test_sqs_event_has_the_shape_lambda_gives():
    body = json.dumps({"Records": [{"s3": {"object": {"key": "staging%2Fstaff.json"}}}]})
    message = {
        "MessageId": "059f36b4",
        "ReceiptHandle": "AQEB",
        "MD5OfBody": hashlib.md5(body.encode()).hexdigest(),
        "Body": body,
        "Attributes": {"ApproximateReceiveCount": "2", "SentTimestamp": "1764148801123"},
        "MessageAttributes": {
            "origin": {"StringValue": "abc", "DataType": "String"},
            "blob": {"BinaryValue": b"\x00\x01", "DataType": "Binary"},
        },
    }
    arn = "arn:aws:sqs:eu-west-2:123456789012:ingest-staff"
    (record,) = sqs_event([message], arn, "eu-west-2")["Records"]
    assert set(record) == {
        "messageId",
        "receiptHandle",
        "body",
        "attributes",
        "messageAttributes",
        "md5OfBody",
        "eventSource",
        "eventSourceARN",
        "awsRegion",
    }
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == arn
    assert record["attributes"]["ApproximateReceiveCount"] == "2"
    assert record["messageAttributes"]["origin"] == {
        "stringValue": "abc",
        "stringListValues": [],
        "binaryListValues": [],
        "dataType": "String",
    }
    assert base64.b64decode(record["messageAttributes"]["blob"]["binaryValue"]) == b"\x00\x01"
    assert describe_message(record["body"]) == "staging/staff.json"


def test_alarm_event_has_the_real_shape_and_names_the_table():
    real = json.loads((FIXTURES / "alarm_state_change.json").read_text())
    played = alarm_state_change_event(
        naming.dlq_alarm_name("staff"),
        naming.merge_dlq_name("staff"),
        "ALARM",
        "OK",
        "eu-west-2",
        "Threshold Crossed",
        now=datetime(2026, 11, 26, 9, 41, tzinfo=UTC),
    )
    assert _shape(played) == _shape(real)
    assert played["detail"]["state"]["timestamp"] == "2026-11-26T09:41:00.000+0000"
    for event in (played, real):
        reason = reason_from_alarm(AlarmStateChangeEvent.model_validate(event))
        assert reason is not None
        assert (reason.table, reason.cause) == ("staff", "ingest-staff-dlq-not-empty")


def test_alarm_back_to_ok_asks_for_no_pause():
    real = json.loads((FIXTURES / "alarm_state_change.json").read_text())
    real["detail"]["state"]["value"] = "OK"
    assert reason_from_alarm(AlarmStateChangeEvent.model_validate(real)) is None


def test_queue_names_map_back_to_tables_even_when_one_name_ends_another():
    assert table_for_queue("ingest-payment_type-dlq") == "payment_type"
    assert table_for_queue("ingest-payment-dlq") == "payment"
    assert table_for_queue("prod-x-sales_order-dlq") == "sales_order"
    assert table_for_queue("ingest-unknown-dlq") is None


def test_notification_filters_are_whole_keys_that_do_not_overlap():
    keys = [key for table in TABLES for key in notification_prefixes(table)]
    assert len(keys) == 2 * len(TABLES)
    assert "staging/payment.json" in keys
    for a in keys:
        assert not any(b != a and b.startswith(a) for b in keys), a


def test_resolve_handler_names_what_is_missing():
    assert callable(resolve_handler("services.pause.handler:handler"))
    with pytest.raises(HandlerImportError, match=r"services\.nothing_here"):
        resolve_handler("services.nothing_here.handler:handler")
    with pytest.raises(HandlerImportError, match="no callable 'nope'"):
        resolve_handler("services.pause.handler:nope")
    with pytest.raises(HandlerImportError, match="not 'module:function'"):
        resolve_handler("services.pause.handler")


def test_outcome_lines_say_table_key_and_result():
    from ops.local.dispatcher import AlarmChange, BusEvent, Invocation, RecordOutcome
    from ops.local.report import outcome_lines

    invocation = Invocation(
        "staff",
        "ingest-merge-staff",
        (
            RecordOutcome("m1", "staging/staff.json", 1, True),
            RecordOutcome("m2", "staging/staff.json", 3, False),
        ),
        None,
    )
    assert outcome_lines(invocation) == [
        "merge table=staff key=staging/staff.json message=m1 receive=1 ok",
        "merge table=staff key=staging/staff.json message=m2 receive=3 failed",
    ]
    alarm = AlarmChange("staff", "ingest-staff-dlq-not-empty", "ALARM", 1, InvokeResult({}))
    assert outcome_lines(alarm) == [
        "alarm table=staff name=ingest-staff-dlq-not-empty state=ALARM dlq_messages=1 pause=ok"
    ]
    event = BusEvent(
        "operator",
        {"detail-type": "IngestPaused", "source": "ingest.pause", "detail": {"table": "staff"}},
    )
    assert outcome_lines(event) == [
        "event consumer=operator type=IngestPaused source=ingest.pause table=staff"
    ]


def test_resolve_handler_reports_a_module_that_fails_while_importing():
    with pytest.raises(HandlerImportError, match="RuntimeError: BUCKET_NAME is not set"):
        resolve_handler("tests.integration.broken_handler_module:handler")


def test_the_pause_rule_takes_a_dlq_alarm_into_alarm_and_nothing_else():
    arn = "arn:aws:cloudwatch:eu-west-2:123456789012:alarm:ingest-staff-dlq-not-empty"
    pattern = pause_pattern([arn])

    def change(state: str, alarm: str = "ingest-staff-dlq-not-empty") -> dict[str, Any]:
        return alarm_state_change_event(alarm, "ingest-staff-dlq", state, "OK", "eu-west-2", "r")

    assert pattern_matches(pattern, change("ALARM"))
    assert not pattern_matches(pattern, change("OK"))
    assert not pattern_matches(pattern, change("ALARM", alarm="ingest-staff-queue-stale"))
    assert not pattern_matches(pattern, {**change("ALARM"), "source": "aws.events"})
