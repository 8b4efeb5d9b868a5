"""The checks every role scenario ends with: nothing was denied, every request the code made
is allowed by the role's real (unrelaxed) documents, and the role grants nothing the code (or
the AWS service acting for the function) does not use."""

from __future__ import annotations

from collections.abc import Mapping

from tests.infra.iam.calls import is_real_action, requests_of
from tests.infra.iam.policies import allowed, as_list, granted_actions, statements
from tests.infra.iam.world import ACCOUNT, Signed

# Actions AWS takes with the function's role, not the function's code: each with why.
LAMBDA_RUNTIME = {
    "logs:CreateLogStream": "Lambda writes the function's logs to its log group",
    "logs:PutLogEvents": "Lambda writes the function's logs to its log group",
}
SQS_EVENT_SOURCE = {
    "sqs:ReceiveMessage": "the SQS event source mapping polls the queue with the role",
    "sqs:DeleteMessage": "the event source deletes the messages a batch handled",
    "sqs:ChangeMessageVisibility": "the event source returns failed messages (CDK's grant)",
    "sqs:GetQueueAttributes": "the event source reads the queue's attributes",
    "sqs:GetQueueUrl": "part of CDK's consume grant for the event source",
}

# Grants for an error path a scenario does not reach, each with why and where it is driven.
GONE_VERSION_LISTING = {
    "s3:ListBucketVersions": "listed only when S3 answers 403 for a version that is gone "
    "(shared/storage.py), which the scenario does not reach: "
    "tests/integration/test_storage_denied.py drives that path",
}

# Operator grants for commands the scenario runs another way, each with why.
OPERATOR_ELSEWHERE = {
    "cloudformation:DescribeStacks": "`--stack NAME` reads the stack's outputs "
    "(tests/integration/test_deployment_resolution.py); the scenario names the bucket",
    "sqs:ListMessageMoveTasks": "redrive polls its SQS move task on AWS; moto has no move "
    "tasks (StartMessageMoveTask is called, and refused as not implemented), so the scenario "
    "redrives one message at a time, the fallback (ops/operations.py)",
}


def check(
    *scenarios: Signed,
    service_side: Mapping[str, str] = LAMBDA_RUNTIME,
) -> None:
    """Each scenario's calls were allowed; together they use every action their (equally
    shaped) roles grant, but for what `service_side` names."""
    for signed in scenarios:
        check_allowed(signed)
    used = {r.action for s in scenarios for c in s.recorder.calls for r in requests_of(c, ACCOUNT)}
    for signed in scenarios:
        unused = sorted(granted_actions(signed.documents) - used - set(service_side))
        assert not unused, f"granted, but nothing called them: {unused}"


def check_event_source(signed: Signed, queue_arn: str) -> None:
    """The event source's actions are granted on the function's own queue and nowhere else."""
    used = {r.action for c in signed.recorder.calls for r in requests_of(c, ACCOUNT)}
    for statement in statements(signed.documents):
        for_source = set(as_list(statement["Action"])) & (set(SQS_EVENT_SOURCE) - used)
        assert not for_source or statement["Resource"] == queue_arn, statement


def check_allowed(signed: Signed) -> None:
    calls = signed.recorder.calls
    assert calls, "the scenario made no AWS call: it proves nothing"
    denied = [str(c) for c in calls if c.denied]
    assert not denied, "AccessDenied under the role's own policy:\n" + "\n".join(denied)
    requests = [r for call in calls for r in requests_of(call, ACCOUNT)]
    not_actions = sorted({r.action for r in requests if not is_real_action(r.action)})
    assert not not_actions, f"mapped to actions IAM does not have: {not_actions}"
    refused = sorted({str(r) for r in requests if not allowed(signed.documents, r)})
    assert not refused, "the role's documents refuse (resource or condition):\n" + "\n".join(
        refused
    )
