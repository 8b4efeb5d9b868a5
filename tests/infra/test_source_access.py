"""Reaching the source: the Source* parameters, the optional VPC, the secret's KMS key and the
SOURCE_* variables the ingest reads (infra/source_access.py)."""

from __future__ import annotations

from typing import Any

import pytest

from shared import naming

pytestmark = [pytest.mark.infra, pytest.mark.xdist_group("infra")]

NO_VALUE = {"Ref": "AWS::NoValue"}


def ingest(synth) -> tuple[str, dict[str, Any]]:
    logical_id, _ = synth.one("AWS::Lambda::Function", FunctionName=naming.ingest_function_name())
    return logical_id, synth.resources[logical_id]


def policies_of(synth, role_id: str) -> dict[str, dict[str, Any]]:
    return {
        k: v
        for k, v in synth.of_type("AWS::IAM::Policy").items()
        if {"Ref": role_id} in v["Properties"]["Roles"]
    }


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_the_source_parameters_are_optional_and_tls_is_never_off(synth):
    params = synth.template["Parameters"]
    for name in ("SourceSubnetIds", "SourceSecurityGroupIds"):
        assert (params[name]["Type"], params[name]["Default"]) == ("CommaDelimitedList", "")
    for name in ("SourceHost", "SourcePort", "SourceDatabase", "SourceCaBundleFile"):
        assert (params[name]["Type"], params[name]["Default"]) == ("String", "")
    assert params["SourceSecretKmsKeyArn"]["Default"] == ""
    ssl_mode = params["SourceSslMode"]
    assert ssl_mode["Default"] == "verify-full"
    assert set(ssl_mode["AllowedValues"]) == {"verify-full", "verify-ca", "require"}


def test_the_conditions_test_whether_subnets_and_a_key_are_given(synth):
    conditions = synth.template["Conditions"]
    joined = {"Fn::Join": ["", {"Ref": "SourceSubnetIds"}]}
    assert conditions["SourceInVpc"] == {"Fn::Not": [{"Fn::Equals": [joined, ""]}]}
    key = {"Ref": "SourceSecretKmsKeyArn"}
    assert conditions["SourceSecretKmsKeyGiven"] == {"Fn::Not": [{"Fn::Equals": [key, ""]}]}
    # a deploy with subnets but no security groups (or the other way round) is refused
    assert "SourceNetworkComplete" in synth.template["Rules"]


def test_the_ingest_is_in_a_vpc_only_when_subnets_are_given(synth):
    _, fn = ingest(synth)
    assert fn["Properties"]["VpcConfig"] == {
        "Fn::If": [
            "SourceInVpc",
            {
                "SubnetIds": {"Ref": "SourceSubnetIds"},
                "SecurityGroupIds": {"Ref": "SourceSecurityGroupIds"},
            },
            NO_VALUE,
        ]
    }
    others = [
        k
        for k, v in synth.of_type("AWS::Lambda::Function").items()
        if "VpcConfig" in v["Properties"] and v is not fn
    ]
    assert others == []


def test_the_eni_rights_exist_only_in_the_vpc_and_before_the_function_uses_them(synth):
    fn_id, fn = ingest(synth)
    role_id = fn["Properties"]["Role"]["Fn::GetAtt"][0]
    in_vpc = {k: v for k, v in policies_of(synth, role_id).items() if v.get("Condition")}
    eni = {k for k, v in in_vpc.items() if v["Condition"] == "SourceInVpc"}
    assert len(eni) == 1
    (eni_id,) = eni
    (statement,) = in_vpc[eni_id]["Properties"]["PolicyDocument"]["Statement"]
    assert set(statement["Action"]) == {
        "ec2:CreateNetworkInterface",
        "ec2:DescribeNetworkInterfaces",
        "ec2:DescribeSubnets",
        "ec2:DeleteNetworkInterface",
        "ec2:AssignPrivateIpAddresses",
        "ec2:UnassignPrivateIpAddresses",
    }
    # Lambda checks these rights when it attaches the function to the VPC: the function is
    # ordered after the policy by a Ref under the same condition, not by a DependsOn.
    variables = fn["Properties"]["Environment"]["Variables"]
    assert variables["VPC_ACCESS_POLICY"] == {"Fn::If": ["SourceInVpc", {"Ref": eni_id}, ""]}
    assert eni_id not in fn.get("DependsOn", [])
    assert fn_id


def test_nothing_depends_on_a_resource_that_may_not_exist(synth):
    """A resource whose DependsOn names a conditional resource is not created either when
    the condition is false (CloudFormation), so a DependsOn may only name a resource that is
    always there or shares the condition."""
    resources = synth.resources
    for logical_id, resource in resources.items():
        for dependency in as_list(resource.get("DependsOn", [])):
            condition = resources[dependency].get("Condition")
            assert condition in (None, resource.get("Condition")), (logical_id, dependency)


def test_kms_decrypt_only_on_the_given_key_through_secrets_manager_for_the_secret(synth):
    _, fn = ingest(synth)
    role_id = fn["Properties"]["Role"]["Fn::GetAtt"][0]
    decrypts = [
        (policy.get("Condition"), statement)
        for policy in policies_of(synth, role_id).values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if any(a.startswith("kms:") for a in as_list(statement["Action"]))
    ]
    assert len(decrypts) == 1
    condition, statement = decrypts[0]
    assert condition == "SourceSecretKmsKeyGiven"
    assert statement["Action"] == "kms:Decrypt"
    assert statement["Resource"] == {"Ref": "SourceSecretKmsKeyArn"}
    assert statement["Condition"] == {
        "StringEquals": {
            "kms:ViaService": {
                "Fn::Join": ["", ["secretsmanager.", {"Ref": "AWS::Region"}, ".amazonaws.com"]]
            },
            "kms:EncryptionContext:SecretARN": {"Ref": "SourceSecretArn"},
        }
    }


def test_the_ingest_is_told_where_and_how_to_connect(synth):
    _, fn = ingest(synth)
    variables = fn["Properties"]["Environment"]["Variables"]
    assert {name: variables[name] for name in variables if name.startswith("SOURCE_")} == {
        "SOURCE_SECRET_ARN": {"Ref": "SourceSecretArn"},
        "SOURCE_HOST": {"Ref": "SourceHost"},
        "SOURCE_PORT": {"Ref": "SourcePort"},
        "SOURCE_DATABASE": {"Ref": "SourceDatabase"},
        "SOURCE_SSLMODE": {"Ref": "SourceSslMode"},
        "SOURCE_CA_BUNDLE": {"Ref": "SourceCaBundleFile"},
    }
