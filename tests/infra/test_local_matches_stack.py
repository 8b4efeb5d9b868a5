"""The local runtime is the stack: what `ops/local/` creates and runs on moto is compared with the
synthesized template (the session's one synth), and any difference fails.

Compared: every queue's attributes and redrive policy, every bucket notification's filter and
queue, every EventBridge rule's pattern or schedule and its targets, every function's handler,
timeout, memory and environment variables, every SQS event source's batch size, every DLQ
alarm's metric and threshold. What only one
side has is named (the local operator's capture queue and rule, the endpoint's variables;
the stack's VPC ordering variable), and so is the one way the two differ on purpose: where
the ingest's source is (services/ingest/settings.py SOURCE_ON_AWS / SOURCE_LOCALLY).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.source_access import ORDERING_VARIABLE
from ops.local.dispatcher import DispatcherConfig, queue_triggers
from ops.local.functions import DEFAULT_HANDLERS, IngestSource, function_specs, local_environment
from ops.local.resources import OPERATOR_CONSUMER
from services.ingest.settings import SOURCE_LOCALLY, SOURCE_ON_AWS, IngestSettings
from shared import naming
from shared.tables import TABLES
from tests.infra.conftest import Synthesized
from tests.infra.iam import policies
from tests.infra.iam.world import World, create_world

pytestmark = [pytest.mark.infra, pytest.mark.xdist_group("infra")]

# What only the local runtime has: a queue and rule that capture every bus event for
# `ingestctl local up` to show.
LOCAL_ONLY_QUEUES = {naming.consumer_queue_name(OPERATOR_CONSUMER)}
LOCAL_ONLY_RULES = {naming.consumer_rule_name(OPERATOR_CONSUMER)}
# SQS's own defaults, for an attribute the template leaves out.
SQS_DEFAULTS = {"VisibilityTimeout": "30", "MessageRetentionPeriod": "345600"}
QUEUE_ATTRIBUTES = ("VisibilityTimeout", "MessageRetentionPeriod", "SqsManagedSseEnabled")
ENDPOINT = "http://127.0.0.1:1"
# What only the stack has: the transform DLQ's alarm notifies operators (the alarm topic), and
# locally nothing does.
STACK_ONLY_ALARMS = {naming.transform_dlq_alarm_name()}
ALARM_TEXTS = ("Namespace", "MetricName", "Statistic", "ComparisonOperator", "TreatMissingData")
ALARM_NUMBERS = ("Period", "EvaluationPeriods", "Threshold")


@pytest.fixture
def world(synth: Synthesized, aws: None) -> World:
    return create_world(synth.template, list(TABLES))


def _resolved(world: World, node: Any) -> Any:
    return policies.resolve(node, world.deployment)


def _of_type(world: World, kind: str) -> list[dict[str, Any]]:
    found = [r for r in world.template["Resources"].values() if r["Type"] == kind]
    return [dict(_resolved(world, r.get("Properties", {}))) for r in found]


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _queue(attributes: dict[str, Any]) -> dict[str, Any]:
    """A queue's settings as SQS reports them (defaults filled in)."""
    given = {k: _text(attributes[k]) for k in QUEUE_ATTRIBUTES if k in attributes}
    settings: dict[str, Any] = SQS_DEFAULTS | given
    redrive = attributes.get("RedrivePolicy")
    if redrive:
        policy = json.loads(redrive) if isinstance(redrive, str) else redrive
        settings["RedrivePolicy"] = {
            "deadLetterTargetArn": policy["deadLetterTargetArn"],
            "maxReceiveCount": int(policy["maxReceiveCount"]),
        }
    return settings


def stack_queues(world: World) -> dict[str, dict[str, Any]]:
    return {props["QueueName"]: _queue(props) for props in _of_type(world, "AWS::SQS::Queue")}


def local_queues(world: World) -> dict[str, dict[str, Any]]:
    sqs = world.admin.sqs
    queues = {}
    for url in sqs.list_queues()["QueueUrls"]:
        attributes: Any = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
        queues[url.rsplit("/", 1)[1]] = _queue(attributes["Attributes"])
    return queues


def _notifications(configurations: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    return {
        (
            c["QueueArn"],
            tuple(c["Events"]),
            tuple((r["Name"].lower(), r["Value"]) for r in c["Filter"]["Key"]["FilterRules"]),
        )
        for c in configurations
    }


def stack_notifications(world: World) -> set[tuple[Any, ...]]:
    (props,) = _of_type(world, "Custom::S3BucketNotifications")
    return _notifications(props["NotificationConfiguration"]["QueueConfigurations"])


def local_notifications(world: World) -> set[tuple[Any, ...]]:
    config: Any = world.admin.s3.get_bucket_notification_configuration(Bucket=world.local.bucket)
    return _notifications(config["QueueConfigurations"])


def _rule(bus: str, props: dict[str, Any], targets: list[dict[str, Any]]) -> dict[str, Any]:
    pattern = props.get("EventPattern")
    return {
        "bus": bus,
        "pattern": json.loads(pattern) if isinstance(pattern, str) else pattern,
        "schedule": props.get("ScheduleExpression"),
        "state": props.get("State"),
        "targets": sorted(
            (json.dumps({k: v for k, v in t.items() if k != "Id"}, sort_keys=True)) for t in targets
        ),
    }


def stack_rules(world: World) -> dict[str, dict[str, Any]]:
    return {
        props["Name"]: _rule(props.get("EventBusName", "default"), props, props["Targets"])
        for props in _of_type(world, "AWS::Events::Rule")
    }


def local_rules(world: World) -> dict[str, dict[str, Any]]:
    events = world.admin.events
    rules = {}
    for bus in ("default", world.local.event_bus):
        for rule in events.list_rules(EventBusName=bus)["Rules"]:
            name = rule["Name"]
            targets = events.list_targets_by_rule(Rule=name, EventBusName=bus)["Targets"]
            rules[name] = _rule(bus, dict(rule), [dict(t) for t in targets])
    return rules


def stack_functions(world: World) -> dict[str, dict[str, Any]]:
    """The chain's functions (CDK's own, unnamed, handle bucket notifications at deploy)."""
    return {
        props["FunctionName"]: {
            "handler": props["Handler"],
            "timeout": props["Timeout"],
            "memory": props["MemorySize"],
            "variables": sorted(set(props["Environment"]["Variables"]) - {ORDERING_VARIABLE}),
        }
        for props in _of_type(world, "AWS::Lambda::Function")
        if "FunctionName" in props
    }


def local_functions(world: World) -> dict[str, dict[str, Any]]:
    """The local functions, with what the stack would give them: the local runtime's own
    variables left out, the ingest's source where the stack has it."""
    own = set(local_environment(ENDPOINT, world.local.region))
    local_source = {IngestSettings.variable(f) for f in SOURCE_LOCALLY}
    aws_source = [IngestSettings.variable(f) for f in SOURCE_ON_AWS]
    specs = function_specs(
        world.local, ENDPOINT, DEFAULT_HANDLERS, ingest=IngestSource("postgresql://u@h/d")
    )
    functions = {}
    for spec in specs:
        variables = set(spec.environment) - own
        if variables & local_source:
            variables = variables - local_source | set(aws_source)
        module, _, function = spec.handler.partition(":")
        functions[spec.name] = {
            "handler": f"{module}.{function}",
            "timeout": spec.timeout_seconds,
            "memory": spec.memory_mb,
            "variables": sorted(variables),
        }
    return functions


def _alarm(settings: dict[str, Any]) -> dict[str, Any]:
    """What an alarm measures and when it fires (numbers as numbers: moto says 0.0, CDK 0)."""
    return {k: settings[k] for k in ALARM_TEXTS} | {k: float(settings[k]) for k in ALARM_NUMBERS}


def stack_alarms(world: World) -> dict[str, dict[str, str]]:
    """The named alarms (the DLQs'), by what they measure and when they fire."""
    alarms = [r["Properties"] for r in world.template["Resources"].values()]
    return {
        props["AlarmName"]: _alarm(props)
        for props in alarms
        if "AlarmName" in props and "MetricName" in props
    }


def local_alarms(world: World) -> dict[str, dict[str, str]]:
    alarms: Any = world.admin.cloudwatch.describe_alarms()["MetricAlarms"]
    return {a["AlarmName"]: _alarm(a) for a in alarms}


def stack_event_sources(world: World) -> set[tuple[str, str, int]]:
    return {
        (props["EventSourceArn"], props["FunctionName"], props["BatchSize"])
        for props in _of_type(world, "AWS::Lambda::EventSourceMapping")
    }


def local_event_sources(world: World) -> set[tuple[str, str, int]]:
    triggers = queue_triggers(world.local, DispatcherConfig(), transform=True)
    return {(t.queue.arn, t.function_name, t.batch_size) for t in triggers}


def test_every_queue_has_the_stacks_attributes_and_redrive_policy(world: World) -> None:
    local = local_queues(world)
    assert set(local) - set(stack_queues(world)) == LOCAL_ONLY_QUEUES
    assert {k: v for k, v in local.items() if k not in LOCAL_ONLY_QUEUES} == stack_queues(world)


def test_every_notification_has_the_stacks_filter_and_queue(world: World) -> None:
    assert local_notifications(world) == stack_notifications(world)
    assert len(stack_notifications(world)) == 2 * len(TABLES)


def test_every_rule_has_the_stacks_pattern_or_schedule_and_targets(world: World) -> None:
    local = local_rules(world)
    assert set(local) - set(stack_rules(world)) == LOCAL_ONLY_RULES
    assert {k: v for k, v in local.items() if k not in LOCAL_ONLY_RULES} == stack_rules(world)


def test_every_function_has_the_stacks_handler_timeout_memory_and_variables(
    world: World,
) -> None:
    assert local_functions(world) == stack_functions(world)
    assert len(stack_functions(world)) == len(TABLES) + 3


def test_every_dlq_alarm_measures_and_fires_as_the_stacks(world: World) -> None:
    stack = stack_alarms(world)
    assert set(stack) - set(local_alarms(world)) == STACK_ONLY_ALARMS
    assert local_alarms(world) == {k: v for k, v in stack.items() if k not in STACK_ONLY_ALARMS}


def test_every_queue_is_drained_in_the_stacks_batches(world: World) -> None:
    assert local_event_sources(world) == stack_event_sources(world)
