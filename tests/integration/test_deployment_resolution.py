"""Operator commands find a deployment by its stack's outputs (ids from naming.output_id)."""

import json

import pytest
from typer.testing import CliRunner

from ops.cli import app
from ops.deployment import Target, TargetError, connect
from shared import naming


def _stack(cfn, name, outputs):
    template = {
        "Resources": {"Placeholder": {"Type": "AWS::SQS::Queue"}},
        "Outputs": {key: {"Value": value} for key, value in outputs.items()},
    }
    cfn.create_stack(StackName=name, TemplateBody=json.dumps(template))


def test_stack_outputs_name_every_resource_the_operator_uses(aws):
    import boto3

    cfn = boto3.client("cloudformation")
    outputs = {
        naming.output_id("BucketName"): "cfn-chose-this-bucket",
        naming.output_id("ScheduleRuleName"): "prod-schedule-XYZ",
        naming.output_id("EventBusName"): "prod-bus",
        naming.output_id("QueueUrl", "payment_type"): "https://sqs/q-payment-type",
        naming.output_id("DlqUrl", "payment_type"): "https://sqs/dlq-payment-type",
    }
    _stack(cfn, "prod", outputs)

    operator = connect(Target(stack="prod"), ("payment_type",))

    assert operator.bucket == operator.store.bucket == "cfn-chose-this-bucket"
    assert operator.schedule_rule == "prod-schedule-XYZ"
    assert operator.event_bus == "prod-bus"
    (pair,) = operator.queue_pairs()
    assert (pair.table, pair.source_url, pair.dlq_url) == (
        "payment_type",
        "https://sqs/q-payment-type",
        "https://sqs/dlq-payment-type",
    )


def test_a_stack_without_a_needed_output_is_a_usage_error(aws):
    import boto3

    _stack(boto3.client("cloudformation"), "old", {naming.output_id("BucketName"): "b"})
    with pytest.raises(TargetError, match="ScheduleRuleName"):
        connect(Target(stack="old"), ("staff",))
    result = CliRunner().invoke(app, ["--stack", "old", "status", "--table", "staff"])
    assert result.exit_code == 2
    assert "ScheduleRuleName" in result.output


def test_no_deployment_named_is_a_usage_error(aws, monkeypatch):
    monkeypatch.delenv("BUCKET_NAME", raising=False)
    monkeypatch.delenv("INGEST_STACK", raising=False)
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 2
    assert "--stack" in result.output
