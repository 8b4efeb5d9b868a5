"""Every AWS call the code makes, recorded at botocore's event hooks, and the IAM
authorisations AWS makes for each.

The recorder registers on every botocore session made while it is installed (boto3's default
session and the operator CLI's own `boto3.Session`), so nothing the code does goes unseen.

The mapping from an API operation to its IAM action takes the service's prefix and the
operation's name from botocore's service model, except where AWS's Service Authorization
Reference says otherwise (`_S3_ACTIONS`, `_BATCH_ACTIONS`, `_PREFIXES`); every action it gives
must exist in AWS's IAM catalogue (policy_sentry's copy), so a wrong mapping fails.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any
from urllib.parse import unquote, urlsplit

import botocore.session

from tests.infra.iam.policies import Request

MISSING_OBJECT_HEADER = "x-test-missing-object"
DENIED_CODES = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"})


@dataclass
class Call:
    service: str  # botocore's service name ("s3", "events", "secretsmanager", ...)
    operation: str
    params: dict[str, Any]
    region: str
    error: str | None = None
    status: int | None = None

    missing_object: bool = False  # answered 403 by the edge for a missing key (world.py)

    @property
    def denied(self) -> bool:
        if self.missing_object:
            return False
        return self.error in DENIED_CODES or self.status == 403

    def __str__(self) -> str:
        return f"{self.service}.{self.operation}({_brief(self.params)}) -> {self.error or 'ok'}"


def _brief(params: dict[str, Any]) -> str:
    keep = ("Bucket", "Key", "Prefix", "VersionId", "QueueUrl", "Name", "SecretId")
    return ", ".join(f"{k}={params[k]!r}" for k in keep if k in params)


@dataclass
class CallRecorder:
    calls: list[Call] = field(default_factory=list)
    listening: bool = True

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        self.listening = False
        try:
            yield
        finally:
            self.listening = True

    def attach(self, session: botocore.session.Session, before_send_s3: Any = None) -> None:
        session.register("provide-client-params", self._params)  # type: ignore[arg-type]
        session.register("after-call", self._answer)  # type: ignore[arg-type]
        if before_send_s3 is not None:
            session.register("before-send.s3", before_send_s3)

    def _params(self, params: Any, model: Any, context: Any, **_: Any) -> None:
        if not self.listening:
            return
        call = Call(
            service=model.service_model.service_name,
            operation=model.name,
            params=dict(params),
            region=str(context.get("client_region", "")),
        )
        context["recorded_call"] = call
        self.calls.append(call)

    def _answer(self, http_response: Any, parsed: Any, context: Any, **_: Any) -> None:
        call = context.get("recorded_call")
        if call is None:
            return
        call.status = getattr(http_response, "status_code", None)
        call.missing_object = MISSING_OBJECT_HEADER in getattr(http_response, "headers", {})
        call.error = (parsed or {}).get("Error", {}).get("Code")

    def denied(self) -> list[Call]:
        return [c for c in self.calls if c.denied]


@contextlib.contextmanager
def recording(before_send_s3: Any = None) -> Iterator[CallRecorder]:
    """Record the calls of every botocore session created inside the block (and give each
    the `before_send_s3` hook, if any)."""
    recorder = CallRecorder()
    original: Callable[..., botocore.session.Session] = botocore.session.get_session

    def get_session(*args: Any, **kwargs: Any) -> botocore.session.Session:
        session = original(*args, **kwargs)
        recorder.attach(session, before_send_s3)
        return session

    botocore.session.get_session = get_session  # boto3.Session() makes its session with it
    try:
        yield recorder
    finally:
        botocore.session.get_session = original


# ---- operation -> IAM action --------------------------------------------------------------

_PREFIXES = {"cloudwatch": "cloudwatch"}  # botocore name -> IAM prefix where signing differs
_BATCH_ACTIONS = {
    ("sqs", "SendMessageBatch"): "SendMessage",
    ("sqs", "DeleteMessageBatch"): "DeleteMessage",
    ("sqs", "ChangeMessageVisibilityBatch"): "ChangeMessageVisibility",
}
# S3 operations whose action is not their name (AWS's "Amazon S3 API operations to actions").
_S3_ACTIONS = {
    "ListObjectsV2": "ListBucket",
    "ListObjects": "ListBucket",
    "HeadBucket": "ListBucket",
    "ListObjectVersions": "ListBucketVersions",
    "HeadObject": "GetObject",
    "CreateMultipartUpload": "PutObject",
    "UploadPart": "PutObject",
    "CompleteMultipartUpload": "PutObject",
    "CopyObject": "PutObject",  # and GetObject on the source: `requests_of`
    "DeleteObjects": "DeleteObject",  # per key: `requests_of`
}
_VERSIONED = {"GetObject": "GetObjectVersion", "DeleteObject": "DeleteObjectVersion"}


def iam_prefix(service: str) -> str:
    if service in _PREFIXES:
        return _PREFIXES[service]
    model = botocore.session.get_session().get_service_model(service)
    return str(model.signing_name)


def action_of(service: str, operation: str) -> str:
    """The IAM action of an operation, before its parameters are known (a versioned read or
    delete is the `...Version` action: `requests_of`)."""
    if service == "s3":
        return f"s3:{_S3_ACTIONS.get(operation, operation)}"
    return f"{iam_prefix(service)}:{_BATCH_ACTIONS.get((service, operation), operation)}"


def requests_of(call: Call, account: str) -> list[Request]:
    """The authorisations AWS makes for `call` (a copy checks its source and its target)."""
    if call.service == "s3":
        return _s3_requests(call)
    if (call.service, call.operation) == ("sqs", "StartMessageMoveTask"):
        return _message_move_requests(call)
    action = action_of(call.service, call.operation)
    return [Request(action, arn) for arn in _arns(call, iam_prefix(call.service), account)]


def _s3_requests(call: Call) -> list[Request]:
    p = call.params
    bucket_arn = f"arn:aws:s3:::{p['Bucket']}"
    if call.operation in {"ListObjectsV2", "ListObjects", "ListObjectVersions"}:
        action = f"s3:{_S3_ACTIONS[call.operation]}"
        return [Request(action, bucket_arn, {"s3:prefix": p.get("Prefix", "")})]
    if call.operation == "DeleteObjects":
        return [
            _object_request("DeleteObject", bucket_arn, o["Key"], o.get("VersionId"))
            for o in p["Delete"]["Objects"]
        ]
    if call.operation == "CopyObject":
        source = _copy_source(p["CopySource"])
        return [
            _object_request("GetObject", f"arn:aws:s3:::{source[0]}", source[1], source[2]),
            _object_request("PutObject", bucket_arn, p["Key"], None),
        ]
    if "Key" not in p:
        return [Request(f"s3:{_S3_ACTIONS.get(call.operation, call.operation)}", bucket_arn)]
    return [_object_request(call.operation, bucket_arn, p["Key"], p.get("VersionId"))]


def _message_move_requests(call: Call) -> list[Request]:
    """A move task needs, on its source, the rights to take the messages, and on its
    destination to send them (AWS's "Amazon SQS dead-letter queue redrive" permissions)."""
    source = call.params["SourceArn"]
    assert "DestinationArn" in call.params, "a move to the original queues: map its targets"
    taking = ("StartMessageMoveTask", "ReceiveMessage", "DeleteMessage", "GetQueueAttributes")
    return [Request(f"sqs:{a}", source) for a in taking] + [
        Request("sqs:SendMessage", call.params["DestinationArn"])
    ]


def _object_request(operation: str, bucket_arn: str, key: str, version: str | None) -> Request:
    action = _S3_ACTIONS.get(operation, operation)
    if version is not None:
        action = _VERSIONED.get(action, action)
    return Request(f"s3:{action}", f"{bucket_arn}/{key}")


def _copy_source(source: Any) -> tuple[str, str, str | None]:
    if isinstance(source, dict):
        return source["Bucket"], source["Key"], source.get("VersionId")
    path, _, query = str(source).partition("?versionId=")
    bucket, _, key = unquote(path).lstrip("/").partition("/")
    return bucket, key, query or None


def _arns(call: Call, prefix: str, account: str) -> list[str]:
    base = f"arn:aws:{prefix}:{call.region}:{account}"
    p = call.params
    if prefix == "sqs":
        if "QueueUrl" in p:
            return [
                f"arn:aws:sqs:{call.region}:{account}:{urlsplit(p['QueueUrl']).path.split('/')[-1]}"
            ]
        if "QueueName" in p:
            return [f"{base}:{p['QueueName']}"]
        if "SourceArn" in p:  # message move tasks are authorised on the source queue
            return [p["SourceArn"]]
    if prefix == "events":
        return _event_arns(call, base)
    if prefix == "secretsmanager":
        return [p["SecretId"]]  # the code always names its secret by ARN
    if prefix == "cloudwatch" and call.operation in {"GetMetricData", "GetMetricStatistics"}:
        return ["*"]  # CloudWatch metric reads have no resource-level permissions
    if prefix == "cloudwatch" and "AlarmNames" in p:
        return [f"{base}:alarm:{name}" for name in p["AlarmNames"]]
    if prefix == "cloudformation" and "StackName" in p:
        return [f"{base}:stack/{p['StackName']}/*"]
    raise AssertionError(f"no resource mapping for {call}: add one in tests/infra/iam/calls.py")


def _event_arns(call: Call, base: str) -> list[str]:
    def bus(name: str | None) -> str:
        if name and name.startswith("arn:"):
            return name
        return f"{base}:event-bus/{name or 'default'}"

    if call.operation == "PutEvents":
        return sorted({bus(e.get("EventBusName")) for e in call.params["Entries"]})
    name = call.params["Name"]
    on = call.params.get("EventBusName")
    return [f"{base}:rule/{name}" if on in (None, "default") else f"{base}:rule/{on}/{name}"]


@cache
def _catalogue() -> dict[str, set[str]]:
    from policy_sentry.querying.actions import get_actions_for_service

    services = ("s3", "sqs", "events", "secretsmanager", "cloudwatch", "cloudformation", "kms")
    return {s: {a.split(":")[1].lower() for a in get_actions_for_service(s)} for s in services}


def is_real_action(action: str) -> bool:
    prefix, _, name = action.partition(":")
    catalogue = _catalogue()
    assert prefix in catalogue, f"{prefix} is not in the catalogue list: add it"
    return name.lower() in catalogue[prefix]
