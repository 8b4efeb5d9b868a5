"""The SQS adapter for sending a message to a queue (e.g. a table's DLQ)."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Protocol

import boto3

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


class MessageSink(Protocol):
    """What logic needs of a queue: send a message (tests pass a list-backed one)."""

    def send(self, body: str) -> str: ...


class MessageQueue:
    """Sends messages to one queue, by URL; the client is created on first use."""

    def __init__(self, url: str, client: SQSClient | None = None) -> None:
        self.url = url
        self._injected = client

    @cached_property
    def client(self) -> SQSClient:
        return self._injected or boto3.client("sqs")

    def send(self, body: str) -> str:
        """Send one message; returns its id."""
        return self.client.send_message(QueueUrl=self.url, MessageBody=body)["MessageId"]
