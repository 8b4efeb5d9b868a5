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
