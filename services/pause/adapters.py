"""The pause function's AWS adapters: the record in the bucket, the rule (the bus: shared)."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

import boto3

from services.pause.models import PAUSE_EVENT_SOURCE, PauseRecord
from shared.events import EventPublisher
from shared.layout import PAUSE_RECORD_KEY
from shared.storage import BucketStore

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient


class BucketPauseState:
    """`_state/pause.json` in the ingest bucket, written conditionally."""

    def __init__(self, store: BucketStore) -> None:
        self.store = store

    def read(self) -> tuple[PauseRecord | None, str | None]:
        stored = self.store.get_if_exists(PAUSE_RECORD_KEY)
        if stored is None:
            return None, None
        return PauseRecord.model_validate_json(stored.data), stored.etag

    def write(self, record: PauseRecord, etag: str | None) -> None:
        data = record.model_dump_json(indent=2).encode()
        if etag is None:
            self.store.put(PAUSE_RECORD_KEY, data, create_only=True)
        else:
            self.store.put(PAUSE_RECORD_KEY, data, if_match=etag)


class _EventsClient:
    def __init__(self, client: EventBridgeClient | None = None) -> None:
        self._injected = client

    @cached_property
    def client(self) -> EventBridgeClient:
        return self._injected or boto3.client("events")


class RuleSchedule(_EventsClient):
    """The ingest schedule: an EventBridge rule on the default bus."""

    def __init__(self, rule_name: str, client: EventBridgeClient | None = None) -> None:
        super().__init__(client)
        self.rule_name = rule_name

    def is_enabled(self) -> bool:
        return self.client.describe_rule(Name=self.rule_name)["State"] == "ENABLED"

    def disable(self) -> None:
        self.client.disable_rule(Name=self.rule_name)

    def enable(self) -> None:
        self.client.enable_rule(Name=self.rule_name)


def pause_publisher(bus_name: str, client: EventBridgeClient | None = None) -> EventPublisher:
    """The shared publisher, with the pause function's own event source."""
    return EventPublisher(bus_name, client, source=PAUSE_EVENT_SOURCE)
