"""cdk-nag acknowledgements: every one names its rule and says why it does not apply."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Stack, Validations
from constructs import IConstruct


def acknowledge(construct: IConstruct, rule_id: str, reason: str) -> None:
    if not reason.strip():
        raise ValueError(f"acknowledging {rule_id} needs a reason")
    Validations.of(construct).acknowledge(Acknowledgment(id=rule_id, reason=reason))


def wildcard_resource_rule(resolved_bucket_arn: object, key_pattern: str) -> str:
    """The id cdk-nag gives an IAM5 finding for `<bucket ARN>/<key pattern>`."""
    match resolved_bucket_arn:
        case {"Fn::GetAtt": [logical_id, "Arn"]}:
            return f"AwsSolutions::AwsSolutions-IAM5[Resource::<{logical_id}.Arn>/{key_pattern}]"
    raise ValueError(f"expected a bucket of this stack, got {resolved_bucket_arn!r}")


def acknowledge_stack(stack: Stack) -> None:
    """Findings on resources CDK itself adds, which we cannot shape."""
    for child in stack.node.children:
        if child.node.id.startswith("BucketNotificationsHandler"):
            acknowledge(
                child,
                "AwsSolutions::AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/"
                "service-role/AWSLambdaBasicExecutionRole]",
                "CDK's own handler that writes the bucket's notification configuration at "
                "deploy time; it only needs to write its logs, which this policy grants.",
            )
    acknowledge(
        stack,
        "CloudFormation-Validate::W2509",
        "SourceSecretArn and SourceSecretKmsKeyArn are ARNs (of the secret and of its key), "
        "not secrets: they are safe to echo.",
    )
