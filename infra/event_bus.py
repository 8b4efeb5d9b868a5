"""The chain's EventBridge bus, its archive, and the rule the transform consumer reads from."""

from __future__ import annotations

from aws_cdk import Aws
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from constructs import Construct

from infra import constants
from infra import facts as infra_facts
from shared import deployment_facts as facts
from shared import naming


class ChainEventBus(Construct):
    """One custom bus for every event of the chain; an archive makes any of them replayable."""

    def __init__(self, scope: Construct, construct_id: str, *, prefix: str) -> None:
        super().__init__(scope, construct_id)
        self.bus = events.EventBus(self, "Bus", event_bus_name=naming.event_bus_name(prefix))
        self.archive = self.bus.archive(
            "Archive",
            archive_name=naming.event_archive_name(prefix),
            description="Every event of the ingest chain, for EventBridge replay",
            # Every event on this bus comes from this account.
            event_pattern=events.EventPattern(account=[Aws.ACCOUNT_ID]),
            retention=constants.EVENT_ARCHIVE_RETENTION,
        )
        # CDK 2.275 writes `KmsKeyIdentifier: ""` when no key is given (aws/aws-cdk#37847), and
        # CloudFormation is reported to refuse the empty string in some regions. Without the
        # property EventBridge encrypts the archive with its AWS owned key, as intended.
        cfn_archive = self.archive.node.default_child
        assert isinstance(cfn_archive, events.CfnArchive)
        cfn_archive.add_property_deletion_override("KmsKeyIdentifier")
        consumer = naming.TRANSFORM_CONSUMER
        self.transform_dlq = infra_facts.queue(
            self,
            "TransformDlq",
            queue_name=naming.consumer_dlq_name(consumer, prefix),
            settings=facts.DLQ,
        )
        self.transform_queue = infra_facts.queue(
            self,
            "TransformQueue",
            queue_name=naming.consumer_queue_name(consumer, prefix),
            settings=facts.TRANSFORM_QUEUE,
            dlq=self.transform_dlq,
        )
        self.transform_rule = events.Rule(
            self,
            "TransformRule",
            rule_name=naming.consumer_rule_name(consumer, prefix),
            description="Merge results the downstream transform consumes",
            event_bus=self.bus,
            event_pattern=infra_facts.event_pattern(facts.TRANSFORM_PATTERN),
            # Events EventBridge cannot deliver land in the consumer's DLQ as well.
            targets=[targets.SqsQueue(self.transform_queue, dead_letter_queue=self.transform_dlq)],
        )
