"""The SNS topic every alarm of the chain notifies, and the optional email subscription to it.

The topic is encrypted with a key of its own, not the AWS managed `alias/aws/sns`: CloudWatch
can publish to an encrypted topic only when the key policy lets `cloudwatch.amazonaws.com`
use the key, and the AWS managed key's policy cannot be changed, so alarms would fail to
publish to a topic under it.
"""

from __future__ import annotations

from aws_cdk import Aws, CfnCondition, Duration, Fn, RemovalPolicy
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from constructs import Construct

from shared import naming

CLOUDWATCH = iam.ServicePrincipal("cloudwatch.amazonaws.com")


class AlarmTopic(Construct):
    """`email` (a token: the AlarmEmail parameter) is subscribed only when it is not empty."""

    def __init__(self, scope: Construct, construct_id: str, *, prefix: str, email: str) -> None:
        super().__init__(scope, construct_id)
        self.key = kms.Key(
            self,
            "Key",
            description=f"Encrypts the {naming.alarm_topic_name(prefix)} SNS topic",
            enable_key_rotation=True,
            # It protects only notifications in flight: nothing is left to decrypt once the
            # topic is gone.
            removal_policy=RemovalPolicy.DESTROY,
            pending_window=Duration.days(7),
        )
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CloudWatchAlarmsPublish",
                principals=[CLOUDWATCH],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],  # in a key policy, "*" is this key
            )
        )
        self.topic = sns.Topic(
            self,
            "Topic",
            topic_name=naming.alarm_topic_name(prefix),
            display_name="Ingest chain alarms",
            master_key=self.key,
            enforce_ssl=True,
        )
        # The topic policy CDK writes (for enforce_ssl) replaces SNS's default one, so say
        # who may publish: CloudWatch, for this account's alarms only.
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CloudWatchAlarmsPublish",
                principals=[CLOUDWATCH],
                actions=["sns:Publish"],
                resources=[self.topic.topic_arn],
                conditions={
                    "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID},
                    "ArnLike": {
                        "aws:SourceArn": f"arn:{Aws.PARTITION}:cloudwatch:{Aws.REGION}:"
                        f"{Aws.ACCOUNT_ID}:alarm:*"
                    },
                },
            )
        )
        given = CfnCondition(
            self, "EmailGiven", expression=Fn.condition_not(Fn.condition_equals(email, ""))
        )
        subscription = sns.CfnSubscription(
            self,
            "Email",
            topic_arn=self.topic.topic_arn,
            protocol="email",
            endpoint=email,
        )
        subscription.cfn_options.condition = given
        self._action = cw_actions.SnsAction(self.topic)

    def notify(self, alarm: cloudwatch.Alarm, *, when_cleared: bool) -> None:
        """Send `alarm`'s ALARM state to the topic, and its return to OK if `when_cleared`."""
        alarm.add_alarm_action(self._action)
        if when_cleared:
            alarm.add_ok_action(self._action)
