"""The managed policy an operator attaches (to a user, group or SSO permission set) to run
`ingestctl` against this deployment: status, history, asof, pause, resume, redrive, dismiss
and replay, and nothing more. tests/infra/test_roles_allow_their_calls.py runs those commands
signed as a role holding exactly this policy."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra import nag
from shared import layout


class OperatorPolicy(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        prefix: str,
        bucket: s3.IBucket,
        bus: events.IEventBus,
        schedule_rule_arn: str,
        queues: Sequence[sqs.IQueue],
        dlqs: Sequence[sqs.IQueue],
    ) -> None:
        super().__init__(scope, construct_id)
        objects = bucket.arn_for_objects("*")
        uploads = [layout.staging_key("*"), layout.baseline_key("*")]
        staging = [bucket.arn_for_objects(key) for key in uploads]
        state = bucket.arn_for_objects(layout.state_key("*"))
        self.policy = iam.ManagedPolicy(
            self,
            "Policy",
            managed_policy_name=f"{prefix}-operator",
            description="Run ingestctl against this deployment (attach to operators)",
            statements=[
                iam.PolicyStatement(
                    sid="ReadTheBucket",
                    actions=["s3:ListBucket", "s3:ListBucketVersions"],
                    resources=[bucket.bucket_arn],
                ),
                iam.PolicyStatement(
                    sid="ReadObjects",
                    actions=["s3:GetObject", "s3:GetObjectVersion"],
                    resources=[objects],
                ),
                # replay stages an archived file again (where it came from); pause, resume
                # and dismiss keep their records under _state/.
                iam.PolicyStatement(
                    sid="StageAndRecord", actions=["s3:PutObject"], resources=[*staging, state]
                ),
                iam.PolicyStatement(
                    sid="PauseAndResumeTheSchedule",
                    actions=["events:DescribeRule", "events:DisableRule", "events:EnableRule"],
                    resources=[schedule_rule_arn],
                ),
                iam.PolicyStatement(
                    sid="SayWhatWasDone",
                    actions=["events:PutEvents"],
                    resources=[bus.event_bus_arn],
                ),
                iam.PolicyStatement(
                    sid="InspectQueues",
                    actions=["sqs:GetQueueAttributes", "sqs:GetQueueUrl"],
                    resources=[q.queue_arn for q in [*queues, *dlqs]],
                ),
                # redrive moves DLQ messages back (SQS's move task, or one by one); dismiss
                # drops those of quarantined batches.
                iam.PolicyStatement(
                    sid="RedriveAndDismiss",
                    actions=[
                        "sqs:ReceiveMessage",
                        "sqs:DeleteMessage",
                        "sqs:ChangeMessageVisibility",
                        "sqs:StartMessageMoveTask",
                        "sqs:ListMessageMoveTasks",
                    ],
                    resources=[q.queue_arn for q in dlqs],
                ),
                iam.PolicyStatement(
                    sid="RedriveOneByOne",
                    actions=["sqs:SendMessage"],
                    resources=[q.queue_arn for q in queues],
                ),
                iam.PolicyStatement(
                    sid="FindTheDeployment",
                    actions=["cloudformation:DescribeStacks"],
                    resources=[Stack.of(self).stack_id],
                ),
            ],
        )
        resolved = Stack.of(self).resolve(bucket.bucket_arn)
        for key in ("*", *uploads, layout.state_key("*")):
            nag.acknowledge(
                self.policy,
                nag.wildcard_resource_rule(resolved, key),
                "Operators read every area of the bucket (status, history, asof), stage "
                "archived files again (replay) and keep pause and dismissal records.",
            )
