"""Operators are told: every alarm notifies one encrypted, HTTPS-only topic; email optional."""

from __future__ import annotations

import pytest

from shared import naming

pytestmark = [pytest.mark.infra, pytest.mark.xdist_group("infra")]


def alarm_topic(synth):
    return synth.one("AWS::SNS::Topic", TopicName=naming.alarm_topic_name())


def test_every_alarm_notifies_the_alarm_topic(synth):
    topic_id, _ = alarm_topic(synth)
    alarms = synth.of_type("AWS::CloudWatch::Alarm")
    assert len(alarms) >= 48  # per table DLQ, age, errors, slow; ingest, pause; transform
    for logical_id, alarm in alarms.items():
        assert {"Ref": topic_id} in alarm["Properties"].get("AlarmActions", []), logical_id


def test_conditions_say_when_they_clear_error_counts_do_not(synth):
    topic_id, _ = alarm_topic(synth)
    for logical_id, alarm in synth.of_type("AWS::CloudWatch::Alarm").items():
        props = alarm["Properties"]
        if props["MetricName"] in ("Errors", "Duration"):  # counts and longest runs
            assert "OKActions" not in props, logical_id
        else:  # a DLQ holding messages, a stale queue
            assert props["OKActions"] == [{"Ref": topic_id}], logical_id


def test_dlq_alarms_still_pause_ingest_through_the_default_bus(synth):
    # Alarm actions do not replace the state-change events the pause rule matches.
    _, rule = synth.one("AWS::Events::Rule", Name=naming.pause_rule_name())
    assert "EventBusName" not in rule
    assert rule["EventPattern"]["detail-type"] == ["CloudWatch Alarm State Change"]


def test_topic_is_encrypted_with_a_rotated_key_cloudwatch_may_use(synth):
    _, topic = alarm_topic(synth)
    key_id = topic["KmsMasterKeyId"]["Fn::GetAtt"][0]
    key = synth.props(key_id)
    assert key["EnableKeyRotation"] is True
    (cloudwatch,) = [
        s
        for s in key["KeyPolicy"]["Statement"]
        if s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}
    ]
    assert cloudwatch["Effect"] == "Allow"
    assert set(cloudwatch["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}


def test_topic_policy_refuses_plain_http_and_lets_this_accounts_alarms_publish(synth):
    topic_id, _ = alarm_topic(synth)
    (policy,) = [
        p["Properties"]["PolicyDocument"]["Statement"]
        for p in synth.of_type("AWS::SNS::TopicPolicy").values()
        if p["Properties"]["Topics"] == [{"Ref": topic_id}]
    ]
    assert any(
        s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        for s in policy
    )
    (allow,) = [s for s in policy if s["Effect"] == "Allow"]
    assert allow["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert allow["Action"] == "sns:Publish"
    assert allow["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}


def test_email_subscription_only_when_alarm_email_is_given(synth):
    topic_id, _ = alarm_topic(synth)
    parameter = synth.template["Parameters"]["AlarmEmail"]
    assert parameter["Default"] == ""
    ((_, subscription),) = synth.of_type("AWS::SNS::Subscription").items()
    assert subscription["Properties"] == {
        "Protocol": "email",
        "Endpoint": {"Ref": "AlarmEmail"},
        "TopicArn": {"Ref": topic_id},
    }
    condition = synth.template["Conditions"][subscription["Condition"]]
    assert condition == {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmEmail"}, ""]}]}


def test_alarm_topic_arn_is_an_output(synth):
    topic_id, _ = alarm_topic(synth)
    assert synth.template["Outputs"][naming.output_id("AlarmTopicArn")]["Value"] == {
        "Ref": topic_id
    }
