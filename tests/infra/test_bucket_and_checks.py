"""The bucket's protections, cdk-nag's AwsSolutions pack, and cfn-lint on the template."""

from __future__ import annotations

import json

import pytest

from shared.layout import TRIGGER_AREAS, Area
from shared.retention import DAY_SECONDS, NONCURRENT_RULES

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


def lifecycle_rules(synth):
    _, bucket = ingest_bucket(synth)
    return {r["Id"]: r for r in bucket["Properties"]["LifecycleConfiguration"]["Rules"]}


def noncurrent_days_by_prefix(synth):
    return {
        r["Prefix"]: r["NoncurrentVersionExpiration"]["NoncurrentDays"]
        for r in lifecycle_rules(synth).values()
        if "NoncurrentVersionExpiration" in r
    }


def longest_message_life_seconds(synth):
    """A message's first life in the template's queues: a standard queue's DLQ keeps the
    original enqueue time, so queue and DLQ together last the longer retention."""
    return max(
        int(props["MessageRetentionPeriod"])
        for props in (p.get("Properties", {}) for p in synth.of_type("AWS::SQS::Queue").values())
        if "MessageRetentionPeriod" in props
    )


def test_unmerged_trigger_versions_outlive_a_message_and_one_redrive(synth):
    days = noncurrent_days_by_prefix(synth)
    life = longest_message_life_seconds(synth)
    for area in TRIGGER_AREAS:
        # a redrive sends a new message: the version must outlive two lives, not one
        assert days[f"{area}/"] * DAY_SECONDS >= 2 * life
        assert days[f"{area}/"] * DAY_SECONDS < 2 * life + DAY_SECONDS  # and no more


def test_other_areas_keep_noncurrent_versions_only_while_a_reader_may_hold_them(synth):
    """Partitions replaced by a merge are read by version while a reader of the older
    manifest runs (at most the longest function timeout); nothing else reads an old version.
    One day is the shortest S3 expiry."""
    days = noncurrent_days_by_prefix(synth)
    longest_run = max(
        int(p["Properties"]["Timeout"]) for p in synth.of_type("AWS::Lambda::Function").values()
    )
    for area in set(Area) - set(TRIGGER_AREAS):
        assert days[f"{area}/"] == 1
        assert days[f"{area}/"] * DAY_SECONDS >= longest_run


def test_lifecycle_rules_cover_every_area_once_and_never_expire_a_current_object(synth):
    rules = lifecycle_rules(synth)
    expiring = [r for r in rules.values() if "NoncurrentVersionExpiration" in r]
    prefixes = sorted(r["Prefix"] for r in expiring)
    # disjoint prefixes: where S3 rules overlap, the shorter expiry wins
    assert prefixes == sorted(f"{area}/" for area in Area)
    assert all(not a.startswith(b) for a in prefixes for b in prefixes if a != b)
    for rule in expiring:
        assert rule["ExpiredObjectDeleteMarker"] is True
        assert "NewerNoncurrentVersions" not in rule["NoncurrentVersionExpiration"]
    assert not any("ExpirationInDays" in r for r in rules.values())
    archive = rules["archive-to-infrequent-access"]
    assert archive["Prefix"] == "archive/"
    assert archive["Transitions"] == [{"StorageClass": "STANDARD_IA", "TransitionInDays": 30}]


def test_the_stack_and_the_local_player_read_one_rule_set(synth):
    days = noncurrent_days_by_prefix(synth)
    assert days == {rule.prefix: rule.days for rule in NONCURRENT_RULES}


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
