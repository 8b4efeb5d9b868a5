"""The chain's EventBridge bus, its archive, and the rule the transform consumer reads from."""

from __future__ import annotations

from aws_cdk import Aws, Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra import constants
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
        self.transform_dlq = sqs.Queue(
            self,
            "TransformDlq",
            queue_name=naming.consumer_dlq_name(consumer, prefix),
            retention_period=Duration.days(naming.DLQ_RETENTION_DAYS),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
        )
        self.transform_queue = sqs.Queue(
            self,
            "TransformQueue",
            queue_name=naming.consumer_queue_name(consumer, prefix),
            retention_period=Duration.days(naming.QUEUE_RETENTION_DAYS),
            # Lambda asks for at least the function timeout; 6x leaves room for retries.
            visibility_timeout=Duration.seconds(6 * naming.TRANSFORM_FUNCTION_TIMEOUT_SECONDS),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.transform_dlq, max_receive_count=naming.MAX_RECEIVE_COUNT
            ),
        )
        self.transform_rule = events.Rule(
            self,
            "TransformRule",
            rule_name=naming.consumer_rule_name(consumer, prefix),
            description="Merge results the downstream transform consumes",
            event_bus=self.bus,
            event_pattern=events.EventPattern(
                source=[naming.EVENT_SOURCE],
                detail_type=list(constants.TRANSFORM_DETAIL_TYPES),
            ),
            # Events EventBridge cannot deliver land in the consumer's DLQ as well.
            targets=[targets.SqsQueue(self.transform_queue, dead_letter_queue=self.transform_dlq)],
        )
