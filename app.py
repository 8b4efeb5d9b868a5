#!/usr/bin/env python3
"""CDK entry point: one environment-agnostic IngestStack, checked by cdk-nag's AwsSolutions pack.

Context (all optional): `prefix` (resource names, default `ingest`), `asset_dir` (the Lambda
bundle, default `.lambda-bundle`, built by `make bundle`), `transform_asset_dir` (the
transform's bundle, default `.lambda-bundle-transform`), `source_secret_arn` (default value
of the SourceSecretArn parameter), `account_concurrency` (the account's Lambda concurrency
quota: synth warns when the stack can run more executions at once).
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import App, Validations
from cdk_nag import AwsSolutionsChecks

from infra.stack import IngestStack
from shared import naming

ROOT = Path(__file__).resolve().parent


# Feature flags the stack relies on, set here so tests and `cdk synth` agree.
FEATURE_FLAGS = {
    # Grant S3 log delivery by bucket policy, not ACLs (the log bucket has ACLs disabled).
    "@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy": True,
}


def build_app(app: App) -> IngestStack:
    for flag, value in FEATURE_FLAGS.items():
        app.node.set_context(flag, value)
    prefix = app.node.try_get_context("prefix") or naming.DEFAULT_PREFIX
    asset_dir = Path(app.node.try_get_context("asset_dir") or ROOT / ".lambda-bundle")
    transform_asset_dir = Path(
        app.node.try_get_context("transform_asset_dir") or ROOT / ".lambda-bundle-transform"
    )
    for folder in (asset_dir, transform_asset_dir):
        if not folder.is_dir():
            raise SystemExit(f"Lambda bundle {folder} is missing: run `make bundle` first")
    account_concurrency = app.node.try_get_context("account_concurrency")
    stack = IngestStack(
        app,
        "IngestStack",
        stack_name=naming.stack_name(prefix),
        description="Ingest bucket kept in step with the source database, event by event",
        asset_dir=asset_dir,
        transform_asset_dir=transform_asset_dir,
        prefix=prefix,
        source_secret_arn_default=app.node.try_get_context("source_secret_arn"),
        account_concurrency=None if account_concurrency is None else int(account_concurrency),
    )
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return stack


if __name__ == "__main__":
    app = App()
    build_app(app)
    app.synth()
