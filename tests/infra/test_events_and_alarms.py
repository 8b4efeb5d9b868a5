"""Bus + archive + consumer rule, the ingest schedule, DLQ alarms → pause, observability."""

from __future__ import annotations

import pytest

from infra import constants
from shared import naming
from shared.tables import TABLES

pytestmark = [pytest.mark.infra, pytest.mark.xdist_group("infra")]


def test_one_custom_bus_with_an_archive(synth):
    bus_id, _ = synth.one("AWS::Events::EventBus", Name=naming.event_bus_name())
    _, archive = synth.one("AWS::Events::Archive", ArchiveName=naming.event_archive_name())
    assert archive["SourceArn"] == {"Fn::GetAtt": [bus_id, "Arn"]}
    assert archive["RetentionDays"] > 0
    assert len(synth.of_type("AWS::Events::EventBus")) == 1


def test_archive_has_no_empty_kms_key_identifier(synth):
    # CDK 2.275 writes `KmsKeyIdentifier: ""` (aws/aws-cdk#37847); the stack deletes it.
    _, archive = synth.one("AWS::Events::Archive", ArchiveName=naming.event_archive_name())
    assert "KmsKeyIdentifier" not in archive

    def strings(value: object) -> list[object]:
        if isinstance(value, dict):
            return [s for v in value.values() for s in strings(v)]
        if isinstance(value, list):
            return [s for v in value for s in strings(v)]
        return [value]

    assert "" not in strings(archive)


def test_transform_rule_sends_merge_events_to_its_queue_with_a_dlq(synth):
    bus_id, _ = synth.one("AWS::Events::EventBus", Name=naming.event_bus_name())
    _, rule = synth.one(
        "AWS::Events::Rule", Name=naming.consumer_rule_name(naming.TRANSFORM_CONSUMER)
    )
    queue_id, queue = synth.one(
        "AWS::SQS::Queue", QueueName=naming.consumer_queue_name(naming.TRANSFORM_CONSUMER)
    )
    dlq_id, _ = synth.one(
        "AWS::SQS::Queue", QueueName=naming.consumer_dlq_name(naming.TRANSFORM_CONSUMER)
    )
    assert rule["EventBusName"] == {"Ref": bus_id}
    assert rule["EventPattern"] == {
        "source": [naming.EVENT_SOURCE],
        "detail-type": ["HistoryAppended", "BaselinePromoted"],
    }
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [queue_id, "Arn"]}
    assert target["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": [dlq_id, "Arn"]}
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": [dlq_id, "Arn"]}
    # EventBridge may send to the queue (CDK writes the queue policy).
    policies = [
        p["Properties"]["PolicyDocument"]["Statement"]
        for p in synth.of_type("AWS::SQS::QueuePolicy").values()
        if {"Ref": queue_id} in p["Properties"]["Queues"]
    ]
    assert any(
        s["Effect"] == "Allow" and s.get("Principal") == {"Service": "events.amazonaws.com"}
        for statements in policies
        for s in statements
    )


def test_schedule_rule_runs_ingest_every_20_minutes_by_default(synth):
    ingest_id, ingest = synth.one(
        "AWS::Lambda::Function", FunctionName=naming.ingest_function_name()
    )
    _, rule = synth.one("AWS::Events::Rule", Name=naming.ingest_schedule_rule_name())
    assert rule["ScheduleExpression"] == {"Ref": "ScheduleExpression"}
    assert synth.template["Parameters"]["ScheduleExpression"]["Default"] == "rate(20 minutes)"
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [ingest_id, "Arn"]}
    env = ingest["Environment"]["Variables"]
    assert env["SCHEDULE_RULE_NAME"] == naming.ingest_schedule_rule_name()
    assert env["SOURCE_SECRET_ARN"] == {"Ref": "SourceSecretArn"}
    assert set(env) == {
        "BUCKET_NAME",
        "EVENT_BUS_NAME",
        "SOURCE_SECRET_ARN",
        "SCHEDULE_RULE_NAME",
        "OVERLAP_SECONDS",
        "POWERTOOLS_SERVICE_NAME",
        # where and how to reach the source (tests/infra/test_source_access.py)
        "SOURCE_HOST",
        "SOURCE_PORT",
        "SOURCE_DATABASE",
        "SOURCE_SSLMODE",
        "SOURCE_CA_BUNDLE",
        "LOG_CAPTURE_TABLES",
        "VPC_ACCESS_POLICY",
    }
    assert ingest["Handler"] == "services.ingest.handler.handler"


@pytest.mark.parametrize("table", list(TABLES))
def test_dlq_alarm_fires_on_any_visible_message(synth, table):
    dlq_id, _ = synth.one("AWS::SQS::Queue", QueueName=naming.merge_dlq_name(table))
    _, alarm = synth.one("AWS::CloudWatch::Alarm", AlarmName=naming.dlq_alarm_name(table))
    assert alarm["Namespace"] == "AWS/SQS"
    assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert alarm["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq_id, "QueueName"]}}
    ]
    assert alarm["Threshold"] == 0
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarm["TreatMissingData"] == "notBreaching"


def test_dlq_alarms_invoke_pause_through_eventbridge(synth):
    pause_id, pause = synth.one("AWS::Lambda::Function", FunctionName=naming.pause_function_name())
    rule_id, rule = synth.one("AWS::Events::Rule", Name=naming.pause_rule_name())
    pattern = rule["EventPattern"]
    assert pattern["source"] == ["aws.cloudwatch"]
    assert pattern["detail-type"] == ["CloudWatch Alarm State Change"]
    assert pattern["detail"] == {"state": {"value": ["ALARM"]}}
    dlq_alarm_ids = {
        synth.one("AWS::CloudWatch::Alarm", AlarmName=naming.dlq_alarm_name(t))[0] for t in TABLES
    }
    assert {r["Fn::GetAtt"][0] for r in pattern["resources"]} == dlq_alarm_ids
    assert "EventBusName" not in rule  # alarm state changes arrive on the default bus
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [pause_id, "Arn"]}
    _, permission = synth.one(
        "AWS::Lambda::Permission",
        FunctionName={"Fn::GetAtt": [pause_id, "Arn"]},
        SourceArn={"Fn::GetAtt": [rule_id, "Arn"]},
    )
    assert permission["Principal"] == "events.amazonaws.com"
    assert pause["Environment"]["Variables"]["SCHEDULE_RULE_NAME"] == (
        naming.ingest_schedule_rule_name()
    )


@pytest.mark.parametrize("table", list(TABLES))
def test_queue_age_and_merge_error_alarms(synth, table):
    queue_id, _ = synth.one("AWS::SQS::Queue", QueueName=naming.merge_queue_name(table))
    fn_id, _ = synth.one("AWS::Lambda::Function", FunctionName=naming.merge_function_name(table))
    alarms = list(synth.of_type("AWS::CloudWatch::Alarm").values())
    age = [
        a["Properties"]
        for a in alarms
        if a["Properties"].get("MetricName") == "ApproximateAgeOfOldestMessage"
        and a["Properties"]["Dimensions"][0]["Value"] == {"Fn::GetAtt": [queue_id, "QueueName"]}
    ]
    assert [a["Threshold"] for a in age] == [20 * 60]
    errors = [
        a["Properties"]
        for a in alarms
        if a["Properties"].get("MetricName") == "Errors"
        and a["Properties"]["Dimensions"][0]["Value"] == {"Ref": fn_id}
    ]
    assert len(errors) == 1
    slow = [
        a["Properties"]
        for a in alarms
        if a["Properties"].get("MetricName") == "Duration"
        and a["Properties"]["Dimensions"][0]["Value"] == {"Ref": fn_id}
    ]
    # half the merge's timeout (120 s), in Lambda's milliseconds, at any one run
    assert [(a["Threshold"], a["Statistic"]) for a in slow] == [(60_000, "Maximum")]


def test_every_function_of_ours_has_a_log_group_with_retention_and_runs_on_arm64(synth):
    ours = {
        k: v["Properties"]
        for k, v in synth.of_type("AWS::Lambda::Function").items()
        if not k.startswith("BucketNotificationsHandler")
    }
    assert len(ours) == len(TABLES) + 3  # merges, ingest, pause, transform
    for logical_id, fn in ours.items():
        log_group_id = fn["LoggingConfig"]["LogGroup"]["Ref"]
        assert synth.props(log_group_id)["RetentionInDays"] > 0, logical_id
        assert fn["Architectures"] == ["arm64"]
        assert fn["Runtime"] == constants.LAMBDA_RUNTIME.name == "python3.14"


def test_one_dashboard_of_the_chain(synth):
    _, dashboard = synth.one("AWS::CloudWatch::Dashboard", DashboardName=naming.dashboard_name())
    body = str(dashboard["DashboardBody"])
    for table in TABLES:
        assert naming.merge_dlq_name(table) in body or "QueueName" in body
    assert "ApproximateNumberOfMessagesVisible" in body
    assert "ApproximateAgeOfOldestMessage" in body


def test_outputs_have_fixed_ids(synth):
    outputs = synth.template["Outputs"]
    for kind in ("BucketName", "EventBusName", "EventBusArn", "ScheduleRuleName"):
        assert kind in outputs
    for table in TABLES:
        for kind in ("QueueUrl", "DlqUrl", "MergeFunctionName"):
            assert naming.output_id(kind, table) in outputs
    assert naming.output_id("QueueUrl", "payment_type") == "QueueUrlPaymentType"
    assert outputs["ScheduleRuleName"]["Value"] == {
        "Ref": synth.one("AWS::Events::Rule", Name=naming.ingest_schedule_rule_name())[0]
    }
