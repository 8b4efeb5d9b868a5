"""Events the ingest puts on the bus, and a small EventBridge publisher.

The merge work owns `shared/events.py` (event models and the shared publisher); until the two
are unified this module keeps the ingest's own port and adapter, with the same rules: a
versioned Pydantic detail, `FailedEntryCount` checked on every PutEvents, failed entries resent.
"""

from __future__ import annotations

import hashlib
from functools import cached_property
from typing import TYPE_CHECKING, Literal, Protocol

import boto3
from pydantic import BaseModel, ConfigDict

from shared.naming import EVENT_SOURCE

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_events.type_defs import PutEventsRequestEntryTypeDef

# A PutEvents entry is at most 256 KB: list this many keys at most, count them all.
MAX_KEYS_LISTED = 1000


class RowsMissingAtSource(BaseModel):
    """Keys that latest holds but the source no longer has (latest keeps them)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    detail_type: Literal["RowsMissingAtSource"] = "RowsMissingAtSource"
    schema_version: Literal[1] = 1
    # The same missing keys give the same id run after run: consumers drop the repeats.
    event_id: str
    table: str
    missing_count: int
    keys: list[int]  # the first MAX_KEYS_LISTED of them, in key order
    truncated: bool

    @classmethod
    def of(cls, table: str, keys: list[int]) -> RowsMissingAtSource:
        ordered = sorted(keys)
        listed = ordered[:MAX_KEYS_LISTED]
        identity = f"RowsMissingAtSource:{table}:{','.join(map(str, ordered))}"
        return cls(
            event_id=hashlib.sha256(identity.encode()).hexdigest()[:32],
            table=table,
            missing_count=len(ordered),
            keys=listed,
            truncated=len(listed) < len(ordered),
        )


IngestEvent = RowsMissingAtSource


class EventPublishError(RuntimeError):
    """EventBridge kept refusing some entries."""


class EventPublisher(Protocol):
    def publish(self, event: IngestEvent) -> None: ...


class EventBridgePublisher:
    """Puts events on one bus; resends only the entries EventBridge reports as failed."""

    attempts = 3

    def __init__(
        self, bus_name: str, source: str = EVENT_SOURCE, client: EventBridgeClient | None = None
    ) -> None:
        self.bus_name = bus_name
        self.source = source
        self._injected = client

    @cached_property
    def client(self) -> EventBridgeClient:
        return self._injected or boto3.client("events")

    def publish(self, event: IngestEvent) -> None:
        pending: list[PutEventsRequestEntryTypeDef] = [
            {
                "Source": self.source,
                "DetailType": event.detail_type,
                "Detail": event.model_dump_json(),
                "EventBusName": self.bus_name,
            }
        ]
        errors: list[str] = []
        for _ in range(self.attempts):
            response = self.client.put_events(Entries=pending)
            if not response.get("FailedEntryCount"):
                return
            results = response["Entries"]
            errors = [
                f"{r['ErrorCode']}: {r.get('ErrorMessage')}" for r in results if "ErrorCode" in r
            ]
            pending = [entry for entry, r in zip(pending, results, strict=True) if "ErrorCode" in r]
        raise EventPublishError(f"EventBridge refused {len(pending)} entries: {errors}")
