"""A message that is not an S3 notification fails its record and the log says why."""

import io
import json
from typing import Any

import pytest

from services.merge.observability import logger


@pytest.fixture
def merge_log():
    buffer = io.StringIO()
    handler: Any = logger.logger_handler
    previous = handler.setStream(buffer)
    yield buffer
    handler.setStream(previous)


@pytest.mark.parametrize("body", ["hello{", '{"Records": [{"eventName": "x"}]}'])
def test_a_body_that_is_not_a_notification_fails_and_is_logged(pipeline, merge_log, body):
    pipeline.receive()  # S3's test event
    pipeline.sqs.send_message(QueueUrl=pipeline.queue_url, MessageBody=body)
    (message,) = pipeline.receive()
    assert pipeline.invoke([message]).failed == [message["MessageId"]]
    lines = [json.loads(line) for line in merge_log.getvalue().splitlines() if line.strip()]
    (logged,) = [line for line in lines if "not an S3 event notification" in line["message"]]
    assert logged["message_id"] == message["MessageId"]
    assert "not an S3 event notification:" in logged["exception"]


def test_a_notification_naming_no_version_fails_its_record_and_writes_nothing(pipeline, merge_log):
    """The merge applies exactly the version a notification names (a versioned bucket's
    always do); one naming none (an unversioned bucket, moto unpatched) is refused."""
    pipeline.stage(b'[{"staff_id": 1}]')
    (message,) = pipeline.receive_records()
    notification = json.loads(message["Body"])
    del notification["Records"][0]["s3"]["object"]["versionId"]
    pipeline.sqs.send_message(QueueUrl=pipeline.queue_url, MessageBody=json.dumps(notification))
    (versionless,) = pipeline.receive_records()
    before = pipeline.all_object_versions()

    assert pipeline.invoke([versionless]).failed == [versionless["MessageId"]]
    assert pipeline.all_object_versions() == before  # not even quarantined: not read at all
    assert pipeline.dlq_bodies() == []  # retried, then dead-lettered by SQS, not by the merge
    lines = [json.loads(line) for line in merge_log.getvalue().splitlines() if line.strip()]
    (logged,) = [line for line in lines if line["message"].startswith("merge failed")]
    assert "names no versionId" in logged["exception"]
    assert logged["key"] == "staging/staff.json"
