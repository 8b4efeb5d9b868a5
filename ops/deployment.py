"""Finding a deployment's resources for the operator commands: on AWS or on the local runtime.

Two ways, one result (an `Operator`):
- `--stack NAME`: the stack's CloudFormation outputs, by the fixed ids of
  `shared.naming.output_id` (BucketName, ScheduleRuleName, EventBusName, QueueUrl<Table>,
  DlqUrl<Table>); nothing is guessed, so renamed or CloudFormation-named resources are found.
- `--bucket NAME` (with `--endpoint-url` for the local runtime): every other name comes from
  `shared.naming` with the prefix, exactly as `ingestctl local up` and the stack name them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import boto3
from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict

from ops.local.resources import DEFAULT_REGION as LOCAL_REGION
from ops.operations import Operator
from shared import naming
from shared.storage import BucketStore
from shared.tables import TABLES


class TargetError(Exception):
    """The options do not name a deployment, or its stack lacks an output we need."""


class Target(BaseModel):
    """Where the operator commands act: the options every command takes."""

    model_config = ConfigDict(frozen=True)

    stack: str | None = None
    bucket: str | None = None
    prefix: str = naming.DEFAULT_PREFIX
    profile: str | None = None
    region: str | None = None
    endpoint_url: str | None = None


def stack_resources(outputs: Mapping[str, str], tables: tuple[str, ...]) -> dict[str, Any]:
    """The Operator's names from a stack's outputs (keyed by output id)."""

    def need(output: str) -> str:
        if output not in outputs:
            raise TargetError(f"the stack has no output {output!r}: deployed by this version?")
        return outputs[output]

    return {
        "bucket": need(naming.output_id("BucketName")),
        "schedule_rule": need(naming.output_id("ScheduleRuleName")),
        "event_bus": need(naming.output_id("EventBusName")),
        "queue_urls": {
            t: (need(naming.output_id("QueueUrl", t)), need(naming.output_id("DlqUrl", t)))
            for t in tables
        },
    }


def stack_outputs(client: Any, stack: str) -> dict[str, str]:
    try:
        (found,) = client.describe_stacks(StackName=stack)["Stacks"]
    except ClientError as exc:
        raise TargetError(f"stack {stack!r}: {exc}") from None
    return {str(o["OutputKey"]): str(o["OutputValue"]) for o in found.get("Outputs", [])}


def process_environment(target: Target) -> dict[str, str]:
    """The variables that point boto3 clients made elsewhere (the ingest's) at `target`'s
    account and region: what `connect`'s session gets as arguments."""
    from ops.local.runtime import LOCAL_CREDENTIALS, endpoint_environment

    variables: dict[str, str] = {}
    if target.endpoint_url:
        variables = endpoint_environment(target.endpoint_url, target.region or LOCAL_REGION)
        if target.profile:
            variables = {k: v for k, v in variables.items() if k not in LOCAL_CREDENTIALS}
    elif target.region:
        variables = {"AWS_REGION": target.region, "AWS_DEFAULT_REGION": target.region}
    if target.profile:
        variables["AWS_PROFILE"] = target.profile
    return variables


def connect(target: Target, tables: tuple[str, ...] = tuple(TABLES)) -> Operator:
    """An Operator on the deployment `target` names (clients made now, calls made later)."""
    if not target.stack and not target.bucket:
        raise TargetError("name the deployment: --stack NAME, or --bucket NAME (local runtime)")
    session_kwargs: dict[str, Any] = {"profile_name": target.profile}
    client_kwargs: dict[str, Any] = {}
    if target.endpoint_url:
        # The local runtime: moto's server takes any credentials; keep a region fixed.
        from ops.local.runtime import LOCAL_CREDENTIALS

        session_kwargs |= {"region_name": target.region or LOCAL_REGION}
        if not target.profile:
            session_kwargs |= {name.lower(): value for name, value in LOCAL_CREDENTIALS.items()}
        client_kwargs["endpoint_url"] = target.endpoint_url
    elif target.region:
        session_kwargs["region_name"] = target.region
    session = boto3.Session(**session_kwargs)
    sqs = session.client("sqs", **client_kwargs)
    events = session.client("events", **client_kwargs)
    s3 = session.client("s3", **client_kwargs)
    if target.stack:
        cfn = session.client("cloudformation", **client_kwargs)
        names = stack_resources(stack_outputs(cfn, target.stack), tables)
    else:
        names = {"bucket": target.bucket}
    bucket = str(names.pop("bucket"))
    return Operator(
        bucket,
        prefix=target.prefix,
        tables=tables,
        sqs=sqs,
        events=events,
        store=BucketStore(bucket, s3),
        **names,
    )
