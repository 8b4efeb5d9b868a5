"""One deployment on moto, named as the synthesized stack names it, and code run signed as
one of its roles with IAM enforced.

The resources come from `ops.local.resources.create_resources` (the names `shared.naming`
gives, as the stack's); `deployment_of` maps the template's logical ids to them, so a policy
document resolves to what AWS would hold for this deployment. `signed_as` creates the role in
moto's IAM with exactly the role's resolved documents (as moto can enforce them:
`policies.for_moto`), assumes it, and runs the block with its credentials, IAM enforced and
every call recorded.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import boto3
from moto.core import disable_iam_authentication, enable_iam_authentication
from moto.s3.models import s3_backends

from ops.local.resources import Clients, create_resources
from ops.local.resources import Deployment as LocalDeployment
from tests.infra.iam import policies
from tests.infra.iam.calls import MISSING_OBJECT_HEADER, CallRecorder, recording
from tests.integration.merge_pipeline import s3_answer

REGION = "eu-west-2"
ACCOUNT = "123456789012"  # moto's
BUCKET = "ingest-iam-test"
ADMIN_KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}

_ARN_FORMATS = {
    "AWS::Logs::LogGroup": "arn:aws:logs:{r}:{a}:log-group:{name}",
    "AWS::Lambda::Function": "arn:aws:lambda:{r}:{a}:function:{name}",
    "AWS::SNS::Topic": "arn:aws:sns:{r}:{a}:{name}",
    "AWS::KMS::Key": "arn:aws:kms:{r}:{a}:key/{name}",
    "AWS::CloudWatch::Alarm": "arn:aws:cloudwatch:{r}:{a}:alarm:{name}",
    "AWS::IAM::Role": "arn:aws:iam::{a}:role/{name}",
    "AWS::Events::EventBus": "arn:aws:events:{r}:{a}:event-bus/{name}",
    "AWS::Events::Rule": "arn:aws:events:{r}:{a}:rule/{name}",
    "AWS::SQS::Queue": "arn:aws:sqs:{r}:{a}:{name}",
    "AWS::Events::Archive": "arn:aws:events:{r}:{a}:archive/{name}",
}
_NAME_PROPERTIES = ("QueueName", "Name", "FunctionName", "AlarmName", "TopicName", "ArchiveName")


def _physical_name(logical_id: str, props: dict[str, Any]) -> str:
    for prop in _NAME_PROPERTIES:
        if isinstance(props.get(prop), str):
            return str(props[prop])
    return logical_id


def deployment_of(
    template: dict[str, Any], local: LocalDeployment, parameters: dict[str, str]
) -> policies.Deployment:
    """The template's intrinsics as this moto deployment resolves them."""
    arns: dict[str, str] = {}
    refs: dict[str, str] = {}
    for logical_id, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        name = _physical_name(logical_id, props)
        kind = resource["Type"]
        if kind == "AWS::S3::Bucket":
            name = local.bucket if "LoggingConfiguration" in props else f"{local.bucket}-logs"
            arns[logical_id], refs[logical_id] = f"arn:aws:s3:::{name}", name
            continue
        fmt = _ARN_FORMATS.get(kind, "arn:aws:unknown:{r}:{a}:{name}")
        arns[logical_id] = fmt.format(r=local.region, a=ACCOUNT, name=name)
        refs[logical_id] = name
        if kind == "AWS::SQS::Queue":
            refs[logical_id] = f"https://sqs.{local.region}.amazonaws.com/{ACCOUNT}/{name}"
    values = {
        name: spec.get("Default", "") for name, spec in template.get("Parameters", {}).items()
    }
    values |= parameters
    deployment = policies.Deployment(local.region, ACCOUNT, values, arns, refs)
    conditions = policies.evaluate_conditions(template, deployment)
    return policies.Deployment(local.region, ACCOUNT, values, arns, refs, conditions)


@dataclass
class World:
    """The moto deployment, an admin's clients (who set the scene, never signed as a role),
    and the template resolved against it."""

    template: dict[str, Any]
    admin: Clients
    local: LocalDeployment
    parameters: dict[str, str] = field(default_factory=dict)

    @property
    def deployment(self) -> policies.Deployment:
        return deployment_of(self.template, self.local, self.parameters)

    def role_documents(self, function_name: str) -> list[policies.Document]:
        role = policies.function_role(self.template, function_name)
        return policies.role_documents(self.template, role, self.deployment)

    def function_environment(self, function_name: str) -> dict[str, str]:
        """The function's environment as the template sets it, resolved."""
        for resource in self.template["Resources"].values():
            props = resource.get("Properties", {})
            if props.get("FunctionName") == function_name:
                env = props.get("Environment", {}).get("Variables", {})
                return {k: str(v) for k, v in policies.resolve(env, self.deployment).items()}
        raise KeyError(function_name)

    @contextlib.contextmanager
    def as_admin(self, recorder: CallRecorder | None = None) -> Iterator[Clients]:
        """Setting the scene inside a signed block: IAM off, the recorder deaf."""
        with disable_iam_authentication():
            if recorder is None:
                yield self.admin
                return
            with recorder.paused():
                yield self.admin


def create_world(template: dict[str, Any], tables: list[str]) -> World:
    """Call inside `mock_aws()`: the local runtime's resources for `tables`, queues emptied of
    S3's test events."""
    admin = Clients.create(region=REGION)  # made now: they keep the admin's credentials
    local = create_resources(admin, bucket=BUCKET, tables=tables, region=REGION)
    for queue in [*local.consumers.values(), *(t.queue for t in local.tables.values())]:
        admin.sqs.purge_queue(QueueUrl=queue.url)
    return World(template, admin, local)


_DENIED_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
    b"<Message>Access Denied</Message></Error>"
)


def _object_of(url: str, bucket: str) -> tuple[str, str | None] | None:
    """(key, version id) of an object URL of `bucket`, virtual-host or path style."""
    parts = urlsplit(url)
    path = unquote(parts.path)
    if not parts.netloc.startswith(f"{bucket}."):
        if not path.startswith(f"/{bucket}/"):
            return None
        path = path.removeprefix(f"/{bucket}")
    key = path.removeprefix("/")
    if not key:
        return None
    version = parse_qs(parts.query).get("versionId", [None])[0]
    return key, version


def answer_missing_objects_as_aws(bucket: str) -> Any:
    """A before-send hook: S3 answers a GET or HEAD of a missing key (or version) with 403,
    not 404, to a caller whose s3:ListBucket is scoped by prefix conditions, as every role's
    is; moto says 404. Given AWS's answer, the code takes the path it takes on AWS (the
    listing of exactly that key), and that listing is authorised like every other call."""

    def hook(request: Any, **_: Any) -> Any:
        if request.method not in ("GET", "HEAD"):
            return None
        found = _object_of(request.url, bucket)
        if found is None or "list-type" in request.url or "versions" in urlsplit(request.url).query:
            return None
        key, version = found
        if s3_backends[ACCOUNT]["aws"].get_object(bucket, key, version) is not None:
            return None
        answer = s3_answer(request, 403, b"" if request.method == "HEAD" else _DENIED_BODY)
        answer.headers[MISSING_OBJECT_HEADER] = "true"
        return answer

    return hook


@dataclass
class Signed:
    recorder: CallRecorder
    moto_policy: policies.MotoPolicy
    documents: list[policies.Document]


@contextlib.contextmanager
def signed_as(
    world: World, role_name: str, documents: list[policies.Document], monkeypatch: Any
) -> Iterator[Signed]:
    """Run the block with the credentials of a role holding exactly `documents` (as moto can
    enforce them), IAM enforced, every call of every new botocore session recorded."""
    moto_policy = policies.for_moto(documents)
    admin = boto3.Session(
        region_name=REGION,
        aws_access_key_id=ADMIN_KEYS["aws_access_key_id"],
        aws_secret_access_key=ADMIN_KEYS["aws_secret_access_key"],
    )
    iam, sts = admin.client("iam"), admin.client("sts")
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}],
    }
    arn = iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=json.dumps(trust))["Role"][
        "Arn"
    ]
    for i, doc in enumerate(moto_policy.documents):
        iam.put_role_policy(
            RoleName=role_name, PolicyName=f"policy-{i}", PolicyDocument=json.dumps(doc)
        )
    credentials = sts.assume_role(RoleArn=arn, RoleSessionName=role_name)["Credentials"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", credentials["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", credentials["SecretAccessKey"])
    monkeypatch.setenv("AWS_SESSION_TOKEN", credentials["SessionToken"])
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    boto3.DEFAULT_SESSION = None  # the code's clients are made afresh, with these credentials
    hook = answer_missing_objects_as_aws(world.local.bucket)
    try:
        with recording(before_send_s3=hook) as recorder, enable_iam_authentication():
            yield Signed(recorder, moto_policy, documents)
    finally:
        boto3.DEFAULT_SESSION = None
