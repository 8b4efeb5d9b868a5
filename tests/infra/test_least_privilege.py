"""Every role reaches only what its function needs; no policy anywhere allows a `*` action."""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

import pytest

from shared import commitlog, layout, naming
from shared.quarantine import quarantine_record_key
from shared.tables import TABLES

pytestmark = [pytest.mark.infra, pytest.mark.xdist_group("infra")]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def all_policy_documents(synth) -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for logical_id, resource in synth.resources.items():
        props = resource.get("Properties", {})
        if "PolicyDocument" in props:
            docs.append((logical_id, props["PolicyDocument"]))
        for policy in props.get("Policies", []):
            docs.append((logical_id, policy["PolicyDocument"]))
        if "AssumeRolePolicyDocument" in props:
            docs.append((logical_id, props["AssumeRolePolicyDocument"]))
    return docs


def statements_of_role(synth, role_id: str) -> list[dict[str, Any]]:
    statements = []
    for _, policy in synth.of_type("AWS::IAM::Policy").items():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            statements += policy["Properties"]["PolicyDocument"]["Statement"]
    assert statements, f"no policy for {role_id}"
    return statements


def role_of_function(synth, function_name: str):
    _, fn = synth.one("AWS::Lambda::Function", FunctionName=function_name)
    return str(fn["Role"]["Fn::GetAtt"][0])


def object_keys(synth, statement: dict[str, Any]) -> list[str]:
    """`<bucket ARN>/<key>` resources of a statement, as their keys; other resources fail."""
    bucket_id = synth.ingest_bucket_id()
    keys = []
    for resource in as_list(statement["Resource"]):
        parts = resource["Fn::Join"][1]
        assert parts[0] == {"Fn::GetAtt": [bucket_id, "Arn"]}, resource
        keys.append(parts[1].removeprefix("/"))
    return keys


def test_there_are_policies_to_scan(synth):
    assert len(all_policy_documents(synth)) > 3 * len(TABLES)


def test_no_allow_statement_anywhere_has_a_wildcard_action(synth):
    for logical_id, doc in all_policy_documents(synth):
        for statement in doc["Statement"]:
            actions = as_list(statement.get("Action", []))
            assert "NotAction" not in statement, logical_id
            if statement["Effect"] == "Allow":
                assert all("*" not in action for action in actions), (logical_id, actions)
            else:
                # The only denies are the HTTPS-only guards on the bucket and queues.
                assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


# What AWS's AWSLambdaVPCAccessExecutionRole grants, less its logs actions.
VPC_ENI_ACTIONS = {
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
}


def test_no_identity_policy_allows_every_resource(synth):
    for logical_id, policy in synth.of_type("AWS::IAM::Policy").items():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            # The one exception, AWS's requirement: a VPC function's role must let Lambda
            # manage its network interfaces, and ec2:DescribeNetworkInterfaces works only on
            # "*" (infra/source_access.py). Only these actions, only when the ingest is in a VPC.
            eni_actions = set(as_list(statement["Action"])) <= VPC_ENI_ACTIONS
            if policy.get("Condition") == "SourceInVpc" and eni_actions:
                continue
            assert statement["Resource"] != "*", logical_id
            assert "*" not in as_list(statement["Resource"]), logical_id


def test_roles_carry_no_managed_policies_except_cdks_notification_handler(synth):
    for logical_id, role in synth.of_type("AWS::IAM::Role").items():
        if logical_id.startswith("BucketNotificationsHandler"):
            continue
        assert "ManagedPolicyArns" not in role["Properties"], logical_id


@pytest.mark.parametrize("table", list(TABLES))
def test_merge_role_reaches_only_its_own_tables_keys(synth, table):
    role_id = role_of_function(synth, naming.merge_function_name(table))
    own = {
        layout.staging_key(table),
        layout.baseline_key(table),
        f"latest/{table}.*",
        f"latest/{table}/*",
        f"history/{table}/*",
        f"archive/{table}/*",
        f"quarantine/{table}/*",
        f"_state/log/{table}/*",
        f"_state/merge/{table}/*",
        f"_state/schema/{table}.json",
    }
    granted: dict[str, set[str]] = {}
    listed: set[str] = set()
    for statement in statements_of_role(synth, role_id):
        actions = as_list(statement["Action"])
        s3_object_actions = [a for a in actions if a.startswith("s3:") and "List" not in a]
        if s3_object_actions:
            for key in object_keys(synth, statement):
                granted.setdefault(key, set()).update(s3_object_actions)
        if "s3:ListBucket" in actions:
            listed |= set(statement["Condition"]["StringLike"]["s3:prefix"])
    assert set(granted) == own
    assert listed == own
    assert granted[layout.staging_key(table)] == {
        "s3:GetObject",
        "s3:GetObjectVersion",
        "s3:DeleteObjectVersion",
    }
    # a baseline, like a staging file, is archived and then exactly its version deleted
    assert granted[layout.baseline_key(table)] == granted[layout.staging_key(table)]
    # the commit log: entries are created once and never deleted
    assert granted[f"_state/log/{table}/*"] == {"s3:GetObject", "s3:PutObject"}
    assert "s3:PutObject" in granted[f"history/{table}/*"]
    assert "s3:DeleteObject" not in granted[f"history/{table}/*"]
    # partitioned latest: the manifest and partitions are written, read by version, dropped
    assert {"s3:PutObject", "s3:GetObjectVersion", "s3:DeleteObject"} <= granted[
        f"latest/{table}/*"
    ]
    # Every key of this table is reachable; no key of another table is, neither by the
    # object grants nor by the list prefixes (payment vs payment_type is the tricky pair).
    for key in keys_of(table):
        assert any(fnmatchcase(key, pattern) for pattern in granted), key
    for other in TABLES:
        if other != table:
            for key in keys_of(other):
                assert not any(fnmatchcase(key, p) for p in set(granted) | listed), (key, table)


def keys_of(table: str) -> list[str]:
    """One concrete key of each kind the merge of `table` reads or writes."""
    stamp, batch = "20261126T092001123000Z", "0123456789abcdef"
    return [
        layout.staging_key(table),
        layout.baseline_key(table),
        layout.latest_key(table),
        layout.latest_manifest_key(table),
        layout.latest_partition_key(table, 0, 9999, batch, "0123456789ab"),
        layout.history_key(table, stamp, batch),
        layout.archive_key(table, stamp, batch),
        layout.quarantine_key(table, stamp, batch),
        layout.quarantine_report_key(table, stamp, batch),
        commitlog.entry_key(table, 1),
        quarantine_record_key(table, batch),
    ]


@pytest.mark.parametrize("table", list(TABLES))
def test_merge_role_sends_only_to_its_dlq_and_puts_only_on_our_bus(synth, table):
    role_id = role_of_function(synth, naming.merge_function_name(table))
    dlq_id, _ = synth.one("AWS::SQS::Queue", QueueName=naming.merge_dlq_name(table))
    queue_id, _ = synth.one("AWS::SQS::Queue", QueueName=naming.merge_queue_name(table))
    bus_id, _ = synth.one("AWS::Events::EventBus", Name=naming.event_bus_name())
    for statement in statements_of_role(synth, role_id):
        actions = as_list(statement["Action"])
        if "sqs:SendMessage" in actions:
            assert statement["Resource"] == {"Fn::GetAtt": [dlq_id, "Arn"]}
        elif any(a.startswith("sqs:") for a in actions):
            # The event source's own consume rights, on the table queue only.
            assert statement["Resource"] == {"Fn::GetAtt": [queue_id, "Arn"]}
            assert "sqs:SendMessage" not in actions
        if "events:PutEvents" in actions:
            assert actions == ["events:PutEvents"]
            assert statement["Resource"] == {"Fn::GetAtt": [bus_id, "Arn"]}


def test_pause_reaches_only_the_schedule_rule_and_its_record(synth):
    """Which actions the pause needs is proven by running it under IAM
    (test_roles_allow_their_calls.py); this pins where they reach."""
    role_id = role_of_function(synth, naming.pause_function_name())
    for statement in statements_of_role(synth, role_id):
        actions = as_list(statement["Action"])
        if any(a.startswith("events:") and a != "events:PutEvents" for a in actions):
            rule_arn = statement["Resource"]["Fn::Join"][1]
            assert rule_arn[-1].endswith(f":rule/{naming.ingest_schedule_rule_name()}")
        if any(a.startswith("s3:") and "List" not in a for a in actions):
            assert object_keys(synth, statement) == ["_state/pause*"]


def test_ingest_writes_only_the_upload_keys_and_reads_only_its_secret(synth):
    role_id = role_of_function(synth, naming.ingest_function_name())
    put_keys: set[str] = set()
    secret_resources = []
    for statement in statements_of_role(synth, role_id):
        actions = as_list(statement["Action"])
        if "s3:PutObject" in actions:
            put_keys |= set(object_keys(synth, statement))
        if "secretsmanager:GetSecretValue" in actions:
            secret_resources.append(statement["Resource"])
    uploads = {layout.staging_key(t) for t in TABLES} | {layout.baseline_key(t) for t in TABLES}
    assert put_keys == uploads | {"_state/ingest/*"}
    assert secret_resources == [{"Ref": "SourceSecretArn"}]
