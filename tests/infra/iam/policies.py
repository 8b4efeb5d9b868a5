"""The policy documents the synthesized template gives a role, resolved for one deployment,
and an evaluator of IAM's rules for the requests the code makes.

The evaluator is the part of IAM the role tests need, written from AWS's policy evaluation
logic: an explicit Deny wins, else some Allow must match the action (case-insensitive, `*` and
`?` wildcards), the resource (case-sensitive wildcards) and every condition of its statement.
Conditions are StringLike/StringEquals/Bool; a key the request does not carry fails the
condition, as it does on AWS (no `...IfExists` operators are used by the stack).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

Document = dict[str, Any]
Statement = dict[str, Any]

STACK_NAME = "IngestStack"
_NO_VALUE = object()  # AWS::NoValue: the property (or list item) is left out


@dataclass(frozen=True)
class Deployment:
    """What one deployment's intrinsics resolve to: its pseudo parameters, the stack
    parameters' values, and the physical ARN / Ref of the resources the policies name."""

    region: str
    account: str
    parameters: Mapping[str, Any]
    arns: Mapping[str, str]
    refs: Mapping[str, str]
    conditions: Mapping[str, bool] = field(default_factory=dict)
    partition: str = "aws"

    def ref(self, name: str) -> Any:
        pseudo = {
            "AWS::Region": self.region,
            "AWS::AccountId": self.account,
            "AWS::Partition": self.partition,
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NoValue": _NO_VALUE,
            "AWS::StackName": STACK_NAME,
            "AWS::StackId": f"arn:aws:cloudformation:{self.region}:{self.account}:stack/"
            f"{STACK_NAME}/00000000-0000-0000-0000-000000000000",
        }
        for source in (pseudo, self.parameters, self.refs):
            if name in source:
                return source[name]
        raise KeyError(f"the template refers to {name!r}, which this deployment does not name")

    def arn(self, logical_id: str) -> str:
        if logical_id not in self.arns:
            raise KeyError(f"the template needs the ARN of {logical_id!r}: name it in the world")
        return self.arns[logical_id]


def resolve(node: Any, deployment: Deployment) -> Any:
    """The value CloudFormation would give `node` (the intrinsics the stack's policies use)."""
    if isinstance(node, list):
        items = [resolve(item, deployment) for item in node]
        return [item for item in items if item is not _NO_VALUE]
    if not isinstance(node, dict):
        return node
    if len(node) == 1:
        ((name, arg),) = node.items()
        if name in _INTRINSICS:
            return _INTRINSICS[name](arg, deployment)
    resolved = {key: resolve(value, deployment) for key, value in node.items()}
    return {key: value for key, value in resolved.items() if value is not _NO_VALUE}


def _get_att(arg: list[str], deployment: Deployment) -> str:
    logical_id, attribute = arg
    assert attribute == "Arn", f"Fn::GetAtt {logical_id}.{attribute}: only Arn is resolved"
    return deployment.arn(logical_id)


def _join(arg: list[Any], deployment: Deployment) -> str:
    separator, parts = arg
    return str(separator).join(str(p) for p in resolve(parts, deployment))


def _if(arg: list[Any], deployment: Deployment) -> Any:
    condition, when_true, when_false = arg
    return resolve(when_true if deployment.conditions[condition] else when_false, deployment)


def _select(arg: list[Any], deployment: Deployment) -> Any:
    index, values = arg
    return resolve(values, deployment)[int(index)]


def _split(arg: list[Any], deployment: Deployment) -> list[str]:
    separator, value = arg
    return str(resolve(value, deployment)).split(separator)


_INTRINSICS = {
    "Ref": lambda arg, d: d.ref(str(arg)),
    "Fn::GetAtt": _get_att,
    "Fn::Join": _join,
    "Fn::If": _if,
    "Fn::Select": _select,
    "Fn::Split": _split,
}


def evaluate_conditions(template: Document, deployment: Deployment) -> dict[str, bool]:
    """The template's conditions for these parameter values."""
    conditions = template.get("Conditions", {})
    done: dict[str, bool] = {}

    def value(node: Any) -> Any:
        if isinstance(node, dict) and len(node) == 1:
            ((name, arg),) = node.items()
            if name == "Condition":
                return condition(arg)
            if name == "Fn::Equals":
                return value(arg[0]) == value(arg[1])
            if name == "Fn::Not":
                return not value(arg[0])
            if name == "Fn::And":
                return all(value(a) for a in arg)
            if name == "Fn::Or":
                return any(value(a) for a in arg)
            if name == "Fn::Join":
                parts = arg[1] if isinstance(arg[1], list) else as_list(value(arg[1]))
                return str(arg[0]).join(str(value(p)) for p in parts)
        return resolve(node, deployment)

    def condition(name: str) -> bool:
        if name not in done:
            done[name] = bool(value(conditions[name]))
        return done[name]

    return {name: condition(name) for name in conditions}


def function_role(template: Document, function_name: str) -> str:
    """The logical id of the role of the function named `function_name`."""
    for resource in template["Resources"].values():
        props = resource.get("Properties", {})
        if (
            resource["Type"] == "AWS::Lambda::Function"
            and props.get("FunctionName") == function_name
        ):
            return str(props["Role"]["Fn::GetAtt"][0])
    raise KeyError(f"no function {function_name!r} in the template")


def role_documents(template: Document, role_id: str, deployment: Deployment) -> list[Document]:
    """Every identity policy document attached to the role, resolved: its inline policies,
    the AWS::IAM::Policy resources naming it, and the managed policies the stack defines."""
    resources = template["Resources"]
    role = resources[role_id]["Properties"]
    docs = [p["PolicyDocument"] for p in role.get("Policies", [])]
    for resource in resources.values():
        props = resource.get("Properties", {})
        if "Condition" in resource and not deployment.conditions[resource["Condition"]]:
            continue  # not created for these parameter values
        if resource["Type"] in {"AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"} and {
            "Ref": role_id
        } in props.get("Roles", []):
            docs.append(props["PolicyDocument"])
    return [resolve(doc, deployment) for doc in docs]


def managed_policy_documents(
    template: Document, policy_name: str, deployment: Deployment
) -> list[Document]:
    """The document of the stack's managed policy named `policy_name`, resolved."""
    for resource in template["Resources"].values():
        props = resource.get("Properties", {})
        is_managed = resource["Type"] == "AWS::IAM::ManagedPolicy"
        if is_managed and props.get("ManagedPolicyName") == policy_name:
            return [resolve(props["PolicyDocument"], deployment)]
    raise KeyError(f"no managed policy {policy_name!r} in the template")


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements(docs: list[Document]) -> Iterator[Statement]:
    for doc in docs:
        yield from as_list(doc["Statement"])


# ---- evaluation ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One authorisation AWS makes for a call: an action on a resource, with context keys."""

    action: str
    resource: str
    context: Mapping[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        extra = f" {json.dumps(dict(self.context))}" if self.context else ""
        return f"{self.action} on {self.resource}{extra}"


def _matches_action(patterns: Any, action: str) -> bool:
    return any(fnmatchcase(action.lower(), str(p).lower()) for p in as_list(patterns))


def _matches_resource(patterns: Any, resource: str) -> bool:
    return any(fnmatchcase(resource, str(p)) for p in as_list(patterns))


def _condition_holds(operator: str, key: str, wanted: Any, context: Mapping[str, str]) -> bool:
    if key not in context:
        return False
    value = context[key]
    if operator == "StringLike":
        return any(fnmatchcase(value, str(w)) for w in as_list(wanted))
    if operator == "StringEquals":
        return value in [str(w) for w in as_list(wanted)]
    if operator == "Bool":
        return value.lower() in [str(w).lower() for w in as_list(wanted)]
    raise AssertionError(f"condition operator {operator} is not evaluated here: add it")


def _statement_applies(statement: Statement, request: Request) -> bool:
    assert "NotAction" not in statement, statement
    assert "NotResource" not in statement, statement
    if not _matches_action(statement["Action"], request.action):
        return False
    if not _matches_resource(statement["Resource"], request.resource):
        return False
    return all(
        _condition_holds(operator, key, wanted, request.context)
        for operator, tests in statement.get("Condition", {}).items()
        for key, wanted in tests.items()
    )


def allowed(docs: list[Document], request: Request) -> bool:
    applying = [s for s in statements(docs) if _statement_applies(s, request)]
    if any(s["Effect"] == "Deny" for s in applying):
        return False
    return any(s["Effect"] == "Allow" for s in applying)


def granted_actions(docs: list[Document]) -> set[str]:
    """Every action an Allow statement names (the stack never uses wildcards in actions)."""
    return {
        str(action)
        for s in statements(docs)
        if s["Effect"] == "Allow"
        for action in as_list(s["Action"])
    }


# ---- what moto can check ------------------------------------------------------------------

# moto matches the resource of a request only for these services (S3 keys and buckets, SQS
# queues); for the others it authorises against "*", so a statement scoped to an ARN would
# never match there. Those statements are widened to "*" for moto, and their resources are
# checked by `allowed` above instead.
MOTO_MATCHES_RESOURCES = frozenset({"s3", "sqs"})
# ... except where the request names no queue URL: moto finds the queue from that alone.
MOTO_UNMATCHED_ACTIONS = frozenset(
    {"sqs:GetQueueUrl", "sqs:StartMessageMoveTask", "sqs:ListMessageMoveTasks"}
)


def _moto_matches(action: str) -> bool:
    service = action.split(":")[0]
    return service in MOTO_MATCHES_RESOURCES and action not in MOTO_UNMATCHED_ACTIONS


@dataclass
class MotoPolicy:
    """The role's documents as moto can enforce them, and what had to be relaxed for that."""

    documents: list[Document]
    relaxed: list[str]


def for_moto(docs: list[Document]) -> MotoPolicy:
    """moto does not evaluate conditions of identity policies (a statement with one denies),
    and matches resources only where `MOTO_MATCHES_RESOURCES` says: relax exactly that."""
    relaxed: list[str] = []
    out: list[Statement] = []
    for statement in statements(docs):
        assert statement["Effect"] == "Allow", statement  # relaxing a Deny would widen it
        by_matching: dict[bool, list[str]] = {}
        for action in as_list(statement["Action"]):
            by_matching.setdefault(_moto_matches(str(action)), []).append(str(action))
        for matched, actions in sorted(by_matching.items()):
            part = dict(statement, Action=actions)
            part.pop("Sid", None)
            if "Condition" in part:
                relaxed.append(f"{actions}: condition {json.dumps(part.pop('Condition'))}")
            if not matched and part["Resource"] != "*":
                relaxed.append(f"{actions}: resource {json.dumps(part['Resource'])} -> *")
                part["Resource"] = "*"
            out.append(part)
    return MotoPolicy([{"Version": "2012-10-17", "Statement": out}], relaxed)
