"""One Lambda function of the chain: its own role, its own log group, the shared code asset."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra import bucket_access, constants, nag
from shared.deployment_facts import FunctionFacts


class ServiceFunction(Construct):
    """A Python arm64 function with an explicit log group and a role that holds no managed policy.

    The role starts with only the right to write to its own log group; each caller grants the
    rest, scoped to what that function touches.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        function_name: str,
        facts: FunctionFacts,
        code: lambda_.Code,
        environment: dict[str, str],
        description: str,
    ) -> None:
        """`facts` give the handler, memory, timeout and service name; `environment` the
        variables of the function's settings (its settings model's `environment(...)`)."""
        super().__init__(scope, construct_id)
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            retention=constants.LOG_RETENTION,
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"Runs {function_name}",
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="WriteOwnLogs",
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[self.log_group.log_group_arn],
            )
        )
        self.function = lambda_.Function(
            self,
            "Function",
            function_name=function_name,
            description=description,
            runtime=constants.LAMBDA_RUNTIME,
            architecture=constants.LAMBDA_ARCHITECTURE,
            handler=facts.handler,
            code=code,
            environment={**facts.service_environment(), **environment},
            memory_size=facts.memory_mb,
            timeout=Duration.seconds(facts.timeout_seconds),
            role=self.role,
            log_group=self.log_group,
            logging_format=lambda_.LoggingFormat.JSON,
        )

    def allow(self, *statements: iam.PolicyStatement) -> None:
        for statement in statements:
            self.role.add_to_policy(statement)

    def allow_objects(
        self,
        sid: str,
        bucket: s3.IBucket,
        actions: Sequence[str],
        keys: Sequence[str],
        *,
        why_pattern: str = "",
    ) -> None:
        """Grant `actions` on these keys; a key pattern (`history/<table>/*`) needs a reason,
        which becomes its cdk-nag acknowledgement (IAM5 flags every `*` in a resource)."""
        self.role.add_to_policy(bucket_access.objects(sid, bucket, actions, keys))
        for key in keys:
            if "*" in key:
                nag.acknowledge(
                    self.role,
                    nag.wildcard_resource_rule(Stack.of(self).resolve(bucket.bucket_arn), key),
                    why_pattern,
                )
