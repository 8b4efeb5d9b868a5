"""How the ingest function reaches the source database: its network (the source's VPC, when
subnets are given), where and how it connects (host, port, database, sslmode, CA bundle) and
the key its secret is encrypted with. All stack parameters; every one is optional."""

from __future__ import annotations

from typing import Any

from aws_cdk import (
    Aws,
    CfnCondition,
    CfnParameter,
    CfnRule,
    CfnRuleAssertion,
    Fn,
    ICfnConditionExpression,
)
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra import nag
from infra.service_function import ServiceFunction
from services.ingest.settings import IngestSettings

# What Lambda needs of a VPC function's role to manage its network interfaces
# (the actions of AWS's AWSLambdaVPCAccessExecutionRole, without its logs:*).
ENI_ACTIONS = (
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
)
SSL_MODES = ("verify-full", "verify-ca", "require")  # never plain text on AWS
# The ingest's one variable no code reads: it orders the function after its VPC policy (the
# stack's alone; the local runtime has no VPC).
ORDERING_VARIABLE = "VPC_ACCESS_POLICY"


class SourceAccess(Construct):
    """The Source* stack parameters, their conditions, and what they do to a function."""

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.subnet_ids = self._list("SourceSubnetIds", "Subnets for the ingest function")
        self.security_group_ids = self._list(
            "SourceSecurityGroupIds", "Security groups for the ingest function"
        )
        self.host = self._text("SourceHost", "Source database host")
        self.port = self._text(
            "SourcePort",
            "Source database port; empty: the secret's port, else 5432",
            allowed_pattern=r"^$|^[0-9]{1,5}$",
        )
        self.database = self._text("SourceDatabase", "Source database name")
        self.ssl_mode = self._param(
            "SourceSslMode",
            type="String",
            default=SSL_MODES[0],
            allowed_values=list(SSL_MODES),
            description="TLS to the source, libpq's meanings: verify-full checks the "
            "certificate's chain and host name, verify-ca the chain only, require neither",
        )
        self.ca_bundle_file = self._text(
            "SourceCaBundleFile",
            "PEM file of the CAs to trust, a path in the Lambda bundle (e.g. "
            "services/ingest/certs/global-bundle.pem); empty: the secret's ca_bundle or "
            "sslrootcert, else the system trust store",
        )
        self.kms_key_arn = self._text(
            "SourceSecretKmsKeyArn",
            "ARN of the customer-managed KMS key the source secret is encrypted with; empty "
            "for the AWS-managed key aws/secretsmanager",
            allowed_pattern=r"^$|^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/[a-zA-Z0-9-]+$",
        )
        self.log_capture_tables = self._text(
            "LogCaptureTables",
            "Tables captured from the database's log (comma-separated; needs logical "
            "replication: README 'Capture modes'); empty: the registry's choice",
            allowed_pattern=r"^[a-z_,]*$",
        )
        self.in_vpc = self._condition("SourceInVpc", _given_list(self.subnet_ids))
        self.key_given = self._condition("SourceSecretKmsKeyGiven", _given(self.kms_key_arn))
        self._both_or_neither_network_list()

    @property
    def environment(self) -> dict[str, str]:
        """The ingest's SOURCE_* settings (services/ingest/settings.py); empty: not given."""
        return IngestSettings.environment(
            source_host=self.host.value_as_string,
            source_port=self.port.value_as_string,
            source_database=self.database.value_as_string,
            source_sslmode=self.ssl_mode.value_as_string,
            source_ca_bundle=self.ca_bundle_file.value_as_string,
            log_capture_tables=self.log_capture_tables.value_as_string,
        )

    def attach(self, fn: ServiceFunction, source_secret_arn: str) -> None:
        self._vpc(fn)
        self._secret_key(fn, source_secret_arn)

    def _vpc(self, fn: ServiceFunction) -> None:
        """In the source's VPC only when subnets are given, with the rights Lambda needs to
        manage the function's network interfaces."""
        policy = self._conditional_policy(
            fn,
            "NetworkInterfaces",
            self.in_vpc,
            iam.PolicyStatement(
                sid="ManageVpcNetworkInterfaces", actions=list(ENI_ACTIONS), resources=["*"]
            ),
        )
        nag.acknowledge(
            policy,
            "AwsSolutions::AwsSolutions-IAM5[Resource::*]",
            "Lambda manages a VPC function's network interfaces with its role; "
            "ec2:DescribeNetworkInterfaces works only on Resource '*' and the interfaces do "
            "not exist before the function does. Only when SourceSubnetIds is given.",
        )
        cfn_function = fn.function.node.default_child
        assert isinstance(cfn_function, lambda_.CfnFunction)
        cfn_function.vpc_config = Fn.condition_if(
            self.in_vpc.logical_id,
            {
                "SubnetIds": self.subnet_ids.value_as_list,
                "SecurityGroupIds": self.security_group_ids.value_as_list,
            },
            Aws.NO_VALUE,
        )
        for rule in ("F3031", "E1150"):  # pattern / format of a subnet and a security group id
            nag.acknowledge(
                cfn_function,
                f"CloudFormation-Validate::{rule}",
                "The validator reads VpcConfig with the parameters' empty defaults; the Fn::If "
                "uses it only when SourceSubnetIds is given, and the SourceNetworkComplete rule "
                "then requires SourceSecurityGroupIds too.",
            )
        # Lambda checks the role's ENI rights when it puts the function in the VPC, so the
        # policy must exist first. A DependsOn would stop the function from being created at
        # all when the policy's condition is false; a Ref inside the same condition orders
        # them only when both exist. The code does not read this variable.
        cfn_policy = policy.node.default_child
        assert isinstance(cfn_policy, iam.CfnPolicy)
        fn.function.add_environment(
            ORDERING_VARIABLE,
            Fn.condition_if(self.in_vpc.logical_id, cfn_policy.ref, "").to_string(),
        )

    def _secret_key(self, fn: ServiceFunction, source_secret_arn: str) -> None:
        """kms:Decrypt on exactly the given key, only through Secrets Manager, only for this
        secret (Secrets Manager's encryption context names it)."""
        self._conditional_policy(
            fn,
            "SecretKey",
            self.key_given,
            iam.PolicyStatement(
                sid="DecryptSourceSecret",
                actions=["kms:Decrypt"],
                resources=[self.kms_key_arn.value_as_string],
                conditions={
                    "StringEquals": {
                        "kms:ViaService": f"secretsmanager.{Aws.REGION}.amazonaws.com",
                        "kms:EncryptionContext:SecretARN": source_secret_arn,
                    }
                },
            ),
        )

    def _conditional_policy(
        self, fn: ServiceFunction, name: str, condition: CfnCondition, *statements: Any
    ) -> iam.Policy:
        policy = iam.Policy(self, name, statements=list(statements), roles=[fn.role])
        cfn_policy = policy.node.default_child
        assert isinstance(cfn_policy, iam.CfnPolicy)
        cfn_policy.cfn_options.condition = condition
        return policy

    def _both_or_neither_network_list(self) -> None:
        """A VPC function needs subnets and security groups: refuse the deploy otherwise."""
        no_subnets = Fn.condition_each_member_equals(self.subnet_ids.value_as_list, "")
        no_groups = Fn.condition_each_member_equals(self.security_group_ids.value_as_list, "")
        rule = CfnRule(
            self,
            "SourceNetworkComplete",
            assertions=[
                CfnRuleAssertion(
                    assert_=Fn.condition_or(
                        Fn.condition_and(no_subnets, no_groups),
                        Fn.condition_and(Fn.condition_not(no_subnets), Fn.condition_not(no_groups)),
                    ),
                    assert_description="Give both SourceSubnetIds and SourceSecurityGroupIds, "
                    "or neither",
                )
            ],
        )
        rule.override_logical_id("SourceNetworkComplete")

    def _param(self, name: str, **kwargs: Any) -> CfnParameter:
        param = CfnParameter(self, name, **kwargs)
        param.override_logical_id(name)
        return param

    def _text(self, name: str, description: str, **kwargs: Any) -> CfnParameter:
        return self._param(name, type="String", default="", description=description, **kwargs)

    def _list(self, name: str, description: str) -> CfnParameter:
        return self._param(
            name,
            type="CommaDelimitedList",
            default="",
            description=f"{description}, to reach a private source (comma-separated ids); "
            "empty: no VPC",
        )

    def _condition(self, name: str, expression: ICfnConditionExpression) -> CfnCondition:
        condition = CfnCondition(self, name, expression=expression)
        condition.override_logical_id(name)
        return condition


def _given(param: CfnParameter) -> ICfnConditionExpression:
    return Fn.condition_not(Fn.condition_equals(param.value_as_string, ""))


def _given_list(param: CfnParameter) -> ICfnConditionExpression:
    return Fn.condition_not(Fn.condition_equals(Fn.join("", param.value_as_list), ""))
