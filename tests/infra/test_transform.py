"""The transform function: drains the transform queue, reads latest/history, writes warehouse/."""

from __future__ import annotations

import pytest

from shared import deployment_facts as facts
from shared import naming
from tests.infra.test_least_privilege import object_keys, role_of_function, statements_of_role

pytestmark = [pytest.mark.infra, pytest.mark.xdist_group("infra")]


def test_transform_function_drains_the_transform_queue_with_partial_failures(synth):
    fn_id, fn = synth.one("AWS::Lambda::Function", FunctionName=naming.transform_function_name())
    assert fn["Handler"] == facts.TRANSFORM.handler == "services.transform.handler.handler"
    assert fn["Architectures"] == ["arm64"]
    assert fn["Timeout"] == facts.TRANSFORM.timeout_seconds
    assert set(fn["Environment"]["Variables"]) == {
        "BUCKET_NAME",
        "EVENT_BUS_NAME",
        "POWERTOOLS_SERVICE_NAME",
    }
    queue_id, queue = synth.one(
        "AWS::SQS::Queue", QueueName=naming.consumer_queue_name(naming.TRANSFORM_CONSUMER)
    )
    assert queue["VisibilityTimeout"] >= 6 * fn["Timeout"]
    (mapping,) = [
        m
        for m in synth.of_type("AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["FunctionName"] == {"Ref": fn_id}
    ]
    props = mapping["Properties"]
    assert props["EventSourceArn"] == {"Fn::GetAtt": [queue_id, "Arn"]}
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props["ScalingConfig"]["MaximumConcurrency"] == facts.TRANSFORM_TRIGGER.max_concurrency


def test_transform_dlq_has_an_alarm(synth):
    dlq_id, _ = synth.one(
        "AWS::SQS::Queue", QueueName=naming.consumer_dlq_name(naming.TRANSFORM_CONSUMER)
    )
    _, alarm = synth.one("AWS::CloudWatch::Alarm", AlarmName=naming.transform_dlq_alarm_name())
    assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert alarm["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq_id, "QueueName"]}}
    ]
    assert alarm["Threshold"] == 0


def test_transform_role_reads_sources_and_writes_only_the_warehouse(synth):
    role = role_of_function(synth, naming.transform_function_name())
    statements = statements_of_role(synth, role)
    s3_access: dict[str, set[str]] = {}
    for statement in statements:
        actions = statement["Action"]
        actions = actions if isinstance(actions, list) else [actions]
        if not all(a.startswith("s3:") for a in actions) or "s3:ListBucket" in actions:
            continue
        for key in object_keys(synth, statement):
            s3_access.setdefault(key, set()).update(actions)
    assert s3_access == {
        "latest/*": {"s3:GetObject", "s3:GetObjectVersion"},  # partitions, by version
        "history/*": {"s3:GetObject"},
        "_state/schema/*.json": {"s3:GetObject"},  # the columns the source added
        "_state/log/*/*": {"s3:GetObject"},  # a key's versions (the change tables)
        "_state/merge/*/index/*": {"s3:GetObject"},  # ... through the history index
        "warehouse/*": {"s3:GetObject", "s3:PutObject"},
    }
    actions = {
        a
        for s in statements
        for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
    }
    assert "events:PutEvents" in actions
    assert not {a for a in actions if a.startswith("s3:Delete")}
    assert not {a for a in actions if a.startswith("sqs:Send")}
