"""The dispatcher plays Lambda: per-table functions, partial batch failures, maxReceiveCount,
the DLQ alarm. The handlers are small ones of the tests' own (the dispatcher is under test)."""

import hashlib
import json
import multiprocessing
import os
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import boto3
import pytest

from ops.local.dispatcher import AlarmChange, DispatcherConfig, Invocation
from ops.local.runtime import LocalRuntime
from services.pause.models import AlarmStateChangeEvent
from shared import deployment_facts as facts
from shared import naming
from tests.waiting import wait_until

HANDLERS = "tests.integration.local_handlers"


class Outcomes(list[Any]):
    def __init__(self):
        super().__init__()
        self.lock = threading.Lock()

    def __call__(self, outcome):
        with self.lock:
            self.append(outcome)

    def of(self, kind):
        with self.lock:
            return [o for o in self if isinstance(o, kind)]


def _seen(s3, bucket, function):
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"_seen/{function}/").get("Contents", [])
    return [json.loads(s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()) for o in listed]


@pytest.fixture
def runtime_factory(monkeypatch, tmp_path):
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parents[2]))
    started = []

    def start(merge, pause, tables):
        outcomes = Outcomes()
        runtime = LocalRuntime(
            outcomes,
            tables=tables,
            handlers={"merge": f"{HANDLERS}:{merge}", "pause": f"{HANDLERS}:{pause}"},
            config=DispatcherConfig(visibility_timeout=1, log_dir=tmp_path / "logs"),
        )
        runtime.start()
        started.append(runtime)
        return runtime, outcomes

    yield start
    for runtime in started:
        runtime.stop()


def test_each_table_function_gets_its_own_settings_and_a_real_sqs_event(runtime_factory):
    runtime, _ = runtime_factory("record_event", "record_event", ["staff", "payment"])
    s3 = boto3.client("s3")
    s3.put_object(Bucket=runtime.bucket, Key="staging/staff.json", Body=b"[]")
    s3.put_object(Bucket=runtime.bucket, Key="baseline/payment.json", Body=b"[]")

    def staged(function):  # what the function saw, without the s3:TestEvent
        return [s for s in _seen(s3, runtime.bucket, function) if "TestEvent" not in str(s)]

    staff_fn, payment_fn = (
        naming.merge_function_name("staff"),
        naming.merge_function_name("payment"),
    )
    wait_until(lambda: staged(staff_fn) and staged(payment_fn), timeout=10)
    deployment = runtime.deployment
    for function, table in ((staff_fn, "staff"), (payment_fn, "payment")):
        (seen,) = staged(function)
        assert seen["env"] == {
            "TABLE_NAME": table,
            "DLQ_URL": deployment.tables[table].dlq.url,
            "BUCKET_NAME": runtime.bucket,
        }
        (record,) = seen["event"]["Records"]
        assert record["eventSourceARN"] == deployment.tables[table].queue.arn
        assert record["eventSource"] == "aws:sqs"
        assert record["md5OfBody"] == hashlib.md5(record["body"].encode()).hexdigest()
        assert record["attributes"]["ApproximateReceiveCount"] == "1"
        assert 0 < seen["remaining_ms"] <= facts.MERGE.timeout_seconds * 1000
    staff_body = json.loads(staged(staff_fn)[0]["event"]["Records"][0]["body"])
    assert unquote_plus(staff_body["Records"][0]["s3"]["object"]["key"]) == "staging/staff.json"


def test_partial_failure_deletes_the_good_and_moves_the_bad_to_the_dlq(runtime_factory):
    runtime, outcomes = runtime_factory("fail_bad_keys", "record_event", ["staff"])
    sqs = boto3.client("sqs")
    staff = runtime.deployment.tables["staff"]
    sqs.send_message_batch(
        QueueUrl=staff.queue.url,
        Entries=[
            {"Id": str(i), "MessageBody": b} for i, b in enumerate(["good-1", "bad", "good-2"])
        ],
    )

    def dlq_bodies():
        messages = sqs.receive_message(
            QueueUrl=staff.dlq.url, VisibilityTimeout=0, MaxNumberOfMessages=10
        ).get("Messages", [])
        return [m["Body"] for m in messages]

    wait_until(lambda: dlq_bodies() == ["bad"], timeout=25)
    records = [r for o in outcomes.of(Invocation) for r in o.records if r.subject != "s3:TestEvent"]
    good = [r for r in records if r.ok]
    assert len({r.message_id for r in good}) == 2
    assert [r.receive_count for r in good] == [1, 1]  # each once, then deleted
    bad = [r for r in records if not r.ok]
    assert [r.receive_count for r in bad] == list(range(1, facts.MAX_RECEIVE_COUNT + 1))
    depth = sqs.get_queue_attributes(QueueUrl=staff.queue.url, AttributeNames=["All"])
    assert depth["Attributes"]["ApproximateNumberOfMessages"] == "0"
    assert depth["Attributes"]["ApproximateNumberOfMessagesNotVisible"] == "0"

    # The DLQ alarm went off once and the pause function got the alarm event.
    wait_until(lambda: outcomes.of(AlarmChange), timeout=5)
    (alarm,) = outcomes.of(AlarmChange)
    assert (alarm.table, alarm.state, alarm.pause.ok) == ("staff", "ALARM", True)
    s3 = boto3.client("s3")
    (seen,) = _seen(s3, runtime.bucket, runtime.dispatcher.pause_function_name)
    event = AlarmStateChangeEvent.model_validate(seen["event"])
    assert event.detail.alarm_name == naming.dlq_alarm_name("staff")
    assert event.detail.queue_names() == [staff.dlq.name]
    cloudwatch = boto3.client("cloudwatch")
    state = cloudwatch.describe_alarms(AlarmNames=[staff.alarm_name])["MetricAlarms"][0]
    assert state["StateValue"] == "ALARM"


def test_a_raising_handler_fails_the_whole_batch(runtime_factory):
    runtime, outcomes = runtime_factory("raise_always", "record_event", ["payment"])
    sqs = boto3.client("sqs")
    queue = runtime.deployment.tables["payment"].queue
    sqs.send_message(QueueUrl=queue.url, MessageBody="anything")
    wait_until(lambda: any(o.error for o in outcomes.of(Invocation) if o.table == "payment"))
    failed = next(o for o in outcomes.of(Invocation) if o.error)
    assert "this handler always fails" in failed.error
    assert not any(r.ok for r in failed.records)


def test_the_runtime_leaves_the_process_environment_as_it_found_it(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "mine")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    runtime = LocalRuntime(
        lambda outcome: None,
        tables=["staff"],
        handlers={"merge": f"{HANDLERS}:record_event", "pause": f"{HANDLERS}:record_event"},
    )
    with runtime:
        assert os.environ["AWS_ENDPOINT_URL"] == runtime.endpoint_url
    assert "AWS_ENDPOINT_URL" not in os.environ
    assert os.environ["AWS_ACCESS_KEY_ID"] == "mine"


def test_the_runtime_stops_within_seconds_with_invocations_in_flight(runtime_factory):
    # Each table's function is mid-invocation when the runtime stops: none may hold it up
    # (one at a time, each waited for in turn, they add up past a supervisor's patience).
    tables = ["payment", "staff", "currency", "design"]
    runtime, _ = runtime_factory("start_then_hang", "record_event", tables)
    s3 = boto3.client("s3")
    sqs = boto3.client("sqs")
    for table in tables:
        sqs.send_message(QueueUrl=runtime.deployment.tables[table].queue.url, MessageBody="x")

    def all_started() -> bool:
        listed = s3.list_objects_v2(Bucket=runtime.bucket, Prefix="_started/")
        return len(listed.get("Contents", [])) == len(tables)

    wait_until(all_started, "every function mid-invocation", timeout=60)
    started = time.monotonic()
    runtime.stop()
    took = time.monotonic() - started
    assert took < 15, f"stop took {took:.1f}s"
    assert not multiprocessing.active_children(), "the function processes are gone"
