"""Per table: notifications on the whole keys → queue (+ DLQ) → merge function, wired right."""

from __future__ import annotations

import pytest

from shared import deployment_facts as facts
from shared import layout, naming
from shared.tables import TABLES

pytestmark = [pytest.mark.infra, pytest.mark.xdist_group("infra")]


def queue_id(synth, name: str):
    logical_id, _ = synth.one("AWS::SQS::Queue", QueueName=name)
    return logical_id


def test_each_table_is_notified_for_its_two_whole_keys_only(synth):
    (_, notifications), *rest = synth.of_type("Custom::S3BucketNotifications").items()
    assert not rest
    configs = notifications["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    by_key: dict[str, str] = {}
    for config in configs:
        assert config["Events"] == ["s3:ObjectCreated:*"]
        (rule,) = config["Filter"]["Key"]["FilterRules"]
        assert rule["Name"] == "prefix"
        by_key[rule["Value"]] = config["QueueArn"]["Fn::GetAtt"][0]
    expected = {}
    for table in TABLES:
        queue = queue_id(synth, naming.merge_queue_name(table))
        expected[layout.staging_key(table)] = queue
        expected[layout.baseline_key(table)] = queue
    assert by_key == expected
    assert len(configs) == 2 * len(TABLES)


def test_no_notification_filter_overlaps_another(synth):
    # Real S3 refuses a configuration where one filter's prefix is a prefix of another's.
    (notifications,) = synth.of_type("Custom::S3BucketNotifications").values()
    configs = notifications["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    prefixes = [c["Filter"]["Key"]["FilterRules"][0]["Value"] for c in configs]
    assert "staging/payment.json" in prefixes
    assert "staging/payment_type.json" in prefixes
    for a in prefixes:
        for b in prefixes:
            assert a == b or not b.startswith(a), (a, b)


@pytest.mark.parametrize("table", list(TABLES))
def test_queue_redrives_to_its_own_dlq_after_max_receive_count(synth, table):
    _, queue = synth.one("AWS::SQS::Queue", QueueName=naming.merge_queue_name(table))
    dlq_id, dlq = synth.one("AWS::SQS::Queue", QueueName=naming.merge_dlq_name(table))
    redrive = queue["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": [dlq_id, "Arn"]}
    assert redrive["maxReceiveCount"] == facts.MAX_RECEIVE_COUNT >= 5
    assert dlq["MessageRetentionPeriod"] == 14 * 24 * 3600
    for q in (queue, dlq):
        assert q["SqsManagedSseEnabled"] is True


@pytest.mark.parametrize("table", list(TABLES))
def test_merge_event_source_reports_partial_failures_and_caps_concurrency(synth, table):
    fn_id, fn = synth.one("AWS::Lambda::Function", FunctionName=naming.merge_function_name(table))
    q_id, queue = synth.one("AWS::SQS::Queue", QueueName=naming.merge_queue_name(table))
    _, esm = synth.one("AWS::Lambda::EventSourceMapping", FunctionName={"Ref": fn_id})
    assert esm["EventSourceArn"] == {"Fn::GetAtt": [q_id, "Arn"]}
    assert esm["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert esm["ScalingConfig"] == {"MaximumConcurrency": facts.MERGE_TRIGGER.max_concurrency}
    assert esm["BatchSize"] == facts.MERGE_TRIGGER.batch_size
    assert esm.get("MaximumBatchingWindowInSeconds", 0) == 0
    # maxConcurrency on the event source, not reserved concurrency on the function.
    assert "ReservedConcurrentExecutions" not in fn
    assert queue["VisibilityTimeout"] >= 6 * fn["Timeout"]
    assert fn["Timeout"] == facts.MERGE.timeout_seconds


@pytest.mark.parametrize("table", list(TABLES))
def test_merge_function_is_told_its_table_bucket_bus_and_dlq(synth, table):
    _, fn = synth.one("AWS::Lambda::Function", FunctionName=naming.merge_function_name(table))
    dlq_id = queue_id(synth, naming.merge_dlq_name(table))
    bus_id, _ = synth.one("AWS::Events::EventBus", Name=naming.event_bus_name())
    bucket_id = synth.ingest_bucket_id()
    env = fn["Environment"]["Variables"]
    assert env["TABLE_NAME"] == table
    assert env["BUCKET_NAME"] == {"Ref": bucket_id}
    assert env["EVENT_BUS_NAME"] == {"Ref": bus_id}
    assert env["DLQ_URL"] == {"Ref": dlq_id}
    assert env["POWERTOOLS_SERVICE_NAME"] == "merge"
    assert fn["Handler"] == "services.merge.handler.handler"


@pytest.mark.parametrize("table", list(TABLES))
def test_queue_policy_lets_only_our_bucket_send(synth, table):
    # moto does not check this; real S3 refuses to configure a notification it cannot deliver.
    q_id = queue_id(synth, naming.merge_queue_name(table))
    (policy,) = [
        p["Properties"]["PolicyDocument"]
        for p in synth.of_type("AWS::SQS::QueuePolicy").values()
        if p["Properties"]["Queues"] == [{"Ref": q_id}]
    ]
    (allow,) = [s for s in policy["Statement"] if s["Effect"] == "Allow"]
    assert allow["Principal"] == {"Service": "s3.amazonaws.com"}
    assert "sqs:SendMessage" in allow["Action"]
    assert allow["Condition"] == {
        "ArnLike": {"aws:SourceArn": {"Fn::GetAtt": [synth.ingest_bucket_id(), "Arn"]}}
    }


def test_every_queue_is_encrypted_and_refuses_plain_http(synth):
    queues = synth.of_type("AWS::SQS::Queue")
    assert len(queues) == 2 * len(TABLES) + 2  # per table queue + DLQ; transform queue + DLQ
    guarded = set()
    for policy in synth.of_type("AWS::SQS::QueuePolicy").values():
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        if any(
            s["Effect"] == "Deny"
            and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
            and s["Action"] == "sqs:*"
            for s in statements
        ):
            guarded |= {ref["Ref"] for ref in policy["Properties"]["Queues"]}
    assert guarded == set(queues)
    for logical_id, queue in queues.items():
        assert queue["Properties"]["SqsManagedSseEnabled"] is True, logical_id


def test_all_functions_share_one_code_asset(synth):
    codes = {
        str(fn["Properties"]["Code"])
        for logical_id, fn in synth.of_type("AWS::Lambda::Function").items()
        if not logical_id.startswith("BucketNotificationsHandler")
    }
    assert len(codes) == 1


def test_the_stack_outputs_everything_the_operator_commands_look_up(synth):
    from ops.deployment import stack_resources

    outputs = {key: f"value-of-{key}" for key in synth.template["Outputs"]}
    names = stack_resources(outputs, tuple(TABLES))  # raises on any missing output id
    assert names["queue_urls"]["payment_type"] == (
        "value-of-QueueUrlPaymentType",
        "value-of-DlqUrlPaymentType",
    )
