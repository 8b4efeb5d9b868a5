"""The bucket's protections, cdk-nag's AwsSolutions pack, and cfn-lint on the template."""

from __future__ import annotations

import json

import pytest

from shared import naming

pytestmark = [pytest.mark.infra, pytest.mark.xdist_group("infra")]


def ingest_bucket(synth):
    logical_id = synth.ingest_bucket_id()
    return logical_id, synth.resources[logical_id]


def test_bucket_is_versioned_encrypted_private_and_retained(synth):
    _, bucket = ingest_bucket(synth)
    props = bucket["Properties"]
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in {"AES256", "aws:kms"}
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert bucket["DeletionPolicy"] == "Retain"
    assert bucket["UpdateReplacePolicy"] == "Retain"


def test_bucket_logs_access_to_a_separate_bucket(synth):
    _, bucket = ingest_bucket(synth)
    log_target = bucket["Properties"]["LoggingConfiguration"]["DestinationBucketName"]
    log_id = log_target["Ref"]
    log_bucket = synth.resources[log_id]
    assert log_bucket["Type"] == "AWS::S3::Bucket"
    assert log_bucket["DeletionPolicy"] == "Retain"


@pytest.mark.parametrize("which", ["ingest", "logs"])
def test_buckets_refuse_plain_http(synth, which):
    ingest_id, bucket = ingest_bucket(synth)
    target = (
        ingest_id
        if which == "ingest"
        else bucket["Properties"]["LoggingConfiguration"]["DestinationBucketName"]["Ref"]
    )
    _, policy = synth.one("AWS::S3::BucketPolicy", Bucket={"Ref": target})
    assert any(
        s["Effect"] == "Deny"
        and s["Action"] == "s3:*"
        and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        for s in policy["PolicyDocument"]["Statement"]
    )


def test_lifecycle_keeps_unmerged_staging_versions_past_the_dlq_retention(synth):
    _, bucket = ingest_bucket(synth)
    rules = {r["Id"]: r for r in bucket["Properties"]["LifecycleConfiguration"]["Rules"]}
    staging = rules["expire-noncurrent-staging"]
    assert staging["Prefix"] == "staging/"
    days = staging["NoncurrentVersionExpiration"]["NoncurrentDays"]
    assert days > naming.DLQ_RETENTION_DAYS + naming.QUEUE_RETENTION_DAYS
    assert "ExpirationInDays" not in staging  # current versions are never expired
    archive = rules["archive-to-infrequent-access"]
    assert archive["Prefix"] == "archive/"
    assert archive["Transitions"] == [{"StorageClass": "STANDARD_IA", "TransitionInDays": 30}]
    # No rule ever expires a current object of the ingest bucket.
    assert not any("ExpirationInDays" in r for r in rules.values())


def test_bucket_name_parameter_is_optional(synth):
    _, bucket = ingest_bucket(synth)
    name = bucket["Properties"]["BucketName"]
    condition, given, absent = name["Fn::If"]
    assert given == {"Ref": "IngestBucketName"}
    assert absent == {"Ref": "AWS::NoValue"}
    assert synth.template["Parameters"]["IngestBucketName"]["Default"] == ""
    assert condition in synth.template["Conditions"]


def test_cdk_nag_aws_solutions_has_no_unacknowledged_finding(synth):
    assert synth.validation_error is None, synth.validation_error
    reports = {r["pluginName"]: r for r in synth.report["pluginReports"]}
    nag = reports["AwsSolutions"]
    assert nag["conclusion"] == "success"
    assert nag["violations"] == []
    # Every acknowledgement says why.
    assert nag["suppressedViolations"]
    for finding in nag["suppressedViolations"]:
        assert len(finding["reason"].strip()) > 20, finding["ruleName"]
    for report in reports.values():
        assert report["violations"] == [], report["pluginName"]


def test_cfn_lint_finds_no_errors_or_unexpected_warnings(synth):
    from cfnlint.api import lint

    matches = lint(json.dumps(synth.template), regions=["eu-west-2"])
    # W3005: CDK writes DependsOn next to a GetAtt of the same resource; redundant, harmless.
    findings = [f"{m.rule.id} {m.message}" for m in matches if m.rule.id != "W3005"]
    assert findings == []
