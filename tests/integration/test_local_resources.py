"""`create_resources` makes what the CDK stack declares, named by shared.naming."""

import json
from typing import Any

import pytest

from ops.local.resources import Clients, create_resources
from shared import deployment_facts as facts
from shared import naming
from shared.tables import TABLES
from tests.waiting import wait_until


@pytest.fixture
def deployment(aws):
    clients = Clients.create(region="eu-west-2")
    return clients, create_resources(clients, bucket="ingest-test")


def _receive_keys(sqs, url):
    keys = []
    for message in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        body = json.loads(message["Body"])
        keys += [r["s3"]["object"]["key"] for r in body.get("Records", [])]
    return keys


def test_every_table_gets_queue_dlq_alarm_and_whole_key_notifications(deployment):
    clients, dep = deployment
    assert set(dep.tables) == set(TABLES)
    staff = dep.tables["staff"]
    attributes = clients.sqs.get_queue_attributes(QueueUrl=staff.queue.url, AttributeNames=["All"])[
        "Attributes"
    ]
    assert json.loads(attributes["RedrivePolicy"]) == {
        "deadLetterTargetArn": staff.dlq.arn,
        "maxReceiveCount": facts.MAX_RECEIVE_COUNT,
    }
    assert int(attributes["VisibilityTimeout"]) == facts.MERGE_QUEUE.visibility_timeout_seconds
    assert staff.queue.name == naming.merge_queue_name("staff")
    assert staff.dlq.name == naming.merge_dlq_name("staff")

    versioning = clients.s3.get_bucket_versioning(Bucket="ingest-test")
    assert versioning["Status"] == "Enabled"
    config = clients.s3.get_bucket_notification_configuration(Bucket="ingest-test")
    filters = {
        (c["QueueArn"], r["Value"])
        for c in config["QueueConfigurations"]
        for r in c["Filter"]["Key"]["FilterRules"]
    }
    assert (staff.queue.arn, "staging/staff.json") in filters
    assert (staff.queue.arn, "baseline/staff.json") in filters
    assert len(filters) == 2 * len(TABLES)

    alarms = clients.cloudwatch.describe_alarms(AlarmNames=[naming.dlq_alarm_name("staff")])
    (alarm,) = alarms["MetricAlarms"]
    assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": staff.dlq.name}]

    rule = clients.events.describe_rule(Name=naming.ingest_schedule_rule_name())
    assert (rule["State"], rule["ScheduleExpression"]) == ("ENABLED", "rate(20 minutes)")
    assert dep.event_bus == naming.event_bus_name()
    assert dep.consumers["transform"].name == naming.consumer_queue_name("transform")


def test_an_upload_reaches_its_own_table_queue_only(deployment):
    clients, dep = deployment
    for res in dep.tables.values():  # the s3:TestEvent every queue gets on configuration
        clients.sqs.purge_queue(QueueUrl=res.queue.url)
    clients.s3.put_object(Bucket="ingest-test", Key="staging/payment_type.json", Body=b"[]")
    clients.s3.put_object(Bucket="ingest-test", Key="latest/payment.json", Body=b"[]")
    assert [
        k.replace("%2F", "/")
        for k in _receive_keys(clients.sqs, dep.tables["payment_type"].queue.url)
    ] == ["staging/payment_type.json"]
    assert _receive_keys(clients.sqs, dep.tables["payment"].queue.url) == []


def test_bus_events_reach_every_consumer_whose_rule_matches(deployment):
    clients, dep = deployment
    clients.events.put_events(
        Entries=[
            {
                "Source": naming.EVENT_SOURCE,
                "DetailType": "HistoryAppended",
                "Detail": json.dumps({"table": "staff"}),
                "EventBusName": dep.event_bus,
            }
        ]
    )
    for consumer in ("transform", "operator"):
        url = dep.consumers[consumer].url

        def received(url: str = url) -> list[Any]:
            return list(clients.sqs.receive_message(QueueUrl=url).get("Messages", []))

        messages = wait_until(received, f"the event on the {consumer} queue", timeout=5, every=0.02)
        assert json.loads(messages[0]["Body"])["detail-type"] == "HistoryAppended"
