"""IAM statements that reach only named keys and prefixes of the ingest bucket.

Object statements name exact keys or `<area>/<table>/*`-style patterns; the list statements carry
an `s3:prefix` condition with the same patterns, so no role can list another table's keys.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3

READ = ("s3:GetObject",)
READ_VERSIONS = ("s3:GetObject", "s3:GetObjectVersion")
WRITE = ("s3:PutObject",)
READ_WRITE = ("s3:GetObject", "s3:PutObject")


def objects(
    sid: str, bucket: s3.IBucket, actions: Sequence[str], keys: Sequence[str]
) -> iam.PolicyStatement:
    """`actions` on exactly these keys (or key patterns) of the bucket."""
    return iam.PolicyStatement(
        sid=sid,
        actions=list(actions),
        resources=[bucket.arn_for_objects(key) for key in keys],
    )


def listing(
    sid: str, bucket: s3.IBucket, patterns: Sequence[str], *, versions: bool = False
) -> iam.PolicyStatement:
    """ListBucket (and ListBucketVersions) only for requests whose prefix matches a pattern."""
    actions = ["s3:ListBucket", "s3:ListBucketVersions"] if versions else ["s3:ListBucket"]
    return iam.PolicyStatement(
        sid=sid,
        actions=actions,
        resources=[bucket.bucket_arn],
        conditions={"StringLike": {"s3:prefix": list(patterns)}},
    )
