"""The ingest bucket and the bucket that receives its server access logs."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra import constants
from shared.layout import Area
from shared.retention import NONCURRENT_RULES


class IngestBucket(Construct):
    """Versioned (the merge applies exact staging versions), encrypted, private, HTTPS only."""

    def __init__(self, scope: Construct, construct_id: str, *, bucket_name: str | None) -> None:
        super().__init__(scope, construct_id)
        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-access-logs",
                    expiration=constants.ACCESS_LOG_EXPIRY,
                    noncurrent_version_expiration=Duration.days(1),
                )
            ],
        )
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            bucket_name=bucket_name,
            versioned=True,
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="ingest-bucket/",
            removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=self._lifecycle_rules(),
        )

    @staticmethod
    def _lifecycle_rules() -> list[s3.LifecycleRule]:
        # What the protocol still reads, per area (shared/retention.py); prefixes disjoint.
        rules = [
            s3.LifecycleRule(
                id=rule.rule_id,
                prefix=rule.prefix,
                noncurrent_version_expiration=Duration.days(rule.days),
                expired_object_delete_marker=True,
            )
            for rule in NONCURRENT_RULES
        ]
        rules += [
            s3.LifecycleRule(
                id="archive-to-infrequent-access",
                prefix=f"{Area.ARCHIVE}/",
                transitions=[
                    s3.Transition(
                        storage_class=s3.StorageClass.INFREQUENT_ACCESS,
                        transition_after=constants.ARCHIVE_TO_INFREQUENT_ACCESS,
                    )
                ],
            ),
            s3.LifecycleRule(
                id="abort-incomplete-uploads",
                abort_incomplete_multipart_upload_after=Duration.days(7),
            ),
        ]
        return rules
