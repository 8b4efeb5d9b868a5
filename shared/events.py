"""Events the pipeline puts on its EventBridge bus, and the publisher that puts them there.

Each event's `detail` is a versioned Pydantic model. PutEvents cannot set the envelope id, so
every detail carries its own deterministic `event_id` (batch + type): a consumer drops
duplicates by it, and a replay of a batch re-emits the same ids. The detail-type is the class
name. To add an event: subclass `EventDetail`. The one module of event models: the merge's,
the ingest's (RowsMissingAtSource) and the pause function's (IngestPaused).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal, Protocol, Self

import boto3
from pydantic import BaseModel, ConfigDict

from shared.naming import EVENT_SOURCE

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_events.type_defs import PutEventsRequestEntryTypeDef

logger = logging.getLogger(__name__)

# PutEvents takes at most 10 entries per call.
PUT_EVENTS_CHUNK = 10
# Keys listed in one event; the rest are only counted (an entry is at most 256 KB).
MAX_KEYS_LISTED = 1000


def event_id(detail_type: str, *parts: str) -> str:
    """The deterministic id of one event: its type and what it is about (table, batch)."""
    return ":".join((detail_type, *parts))


class EventDetail(BaseModel):
    """Base of every event detail."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    schema_version: int = 1
    event_id: str

    @classmethod
    def detail_type(cls) -> str:
        return cls.__name__


class BatchEvent(EventDetail):
    """An event about one batch (one staging or baseline object version) of one table."""

    table: str
    batch: str
    source_key: str
    source_version: str | None

    @classmethod
    def for_batch(cls, **fields: Any) -> Self:
        """Build the event with its id derived from table and batch."""
        return cls(event_id=event_id(cls.detail_type(), fields["table"], fields["batch"]), **fields)


class MergeCounts(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    late: int = 0
    deleted: int = 0  # keys whose row left latest (a delete applied): its row is in history
    history_rows: int = 0
    history_deleted: int = 0  # history rows marked deleted (`_deleted_at`)


class HistoryAppended(BatchEvent):
    """A staging version was merged: latest and history now hold its rows."""

    latest_key: str
    history_key: str | None
    keys_written: list[int]
    keys_truncated: bool = False
    keys_deleted: list[int] = []  # keys removed from latest (their last row went to history)
    counts: MergeCounts


class StagingArchived(BatchEvent):
    archive_key: str
    rows: int


class StagingEmpty(BatchEvent):
    """A staging version held no rows: checked, found empty, its version deleted."""


class StagingRejected(BatchEvent):
    quarantine_key: str
    report_key: str
    problems: int
    reason: str


class SchemaDrift(BatchEvent):
    """A batch's rows hold columns the table's model does not name: under the table's policy
    they were added (nullable) before its commit, or the batch was stopped (quarantined)."""

    columns: list[str]
    policy: Literal["stop", "add_nullable"]
    action: Literal["added", "stopped"]


class BaselinePromoted(BatchEvent):
    latest_key: str
    rows: int


class RowsMissingAtSource(EventDetail):
    """Keys that latest holds but the source no longer has (latest keeps them; the ingest)."""

    table: str
    missing_count: int
    keys: list[int]  # the first MAX_KEYS_LISTED of them, in key order
    truncated: bool

    @classmethod
    def of(cls, table: str, keys: Sequence[int]) -> Self:
        ordered = sorted(keys)
        listed, truncated = keys_listed(ordered)
        # The same missing keys give the same id run after run: consumers drop the repeats.
        digest = hashlib.sha256(",".join(map(str, ordered)).encode()).hexdigest()[:32]
        return cls(
            event_id=event_id(cls.detail_type(), table, digest),
            table=table,
            missing_count=len(ordered),
            keys=listed,
            truncated=truncated,
        )


class IngestPaused(EventDetail):
    """The ingest schedule was disabled: a DLQ alarm (or an operator) asked for it (pause)."""

    cause: str  # the alarm name, or "operator: <reason>"
    table: str | None
    queue_name: str | None
    schedule_rule: str
    paused_at: datetime


class WarehouseUpdated(EventDetail):
    """The transform applied one merge event (or a rebuild) to the warehouse.

    `tables` maps each warehouse table written to its rows written: new fact versions, or the
    rows of a dimension file that changed. Its id follows the event that caused it.
    """

    cause: str
    source_table: str | None = None
    batch: str | None = None
    tables: dict[str, int]

    @property
    def rows_written(self) -> int:
        return sum(self.tables.values())


def keys_listed(keys: Sequence[int]) -> tuple[list[int], bool]:
    """The keys to list in an event, and whether the list was cut to stay under 256 KB."""
    return list(keys[:MAX_KEYS_LISTED]), len(keys) > MAX_KEYS_LISTED


class EventDeliveryError(Exception):
    """Some events were still refused after the bounded resends."""


class EventSink(Protocol):
    """What logic needs of a publisher (tests pass a list-backed one)."""

    def publish(self, details: Sequence[EventDetail]) -> None: ...


class EventPublisher:
    """Puts event details on one bus; resends only the entries PutEvents reports as failed."""

    def __init__(
        self,
        bus_name: str,
        client: EventBridgeClient | None = None,
        *,
        source: str = EVENT_SOURCE,
        attempts: int = 3,
    ) -> None:
        self.bus_name = bus_name
        self.source = source
        self.attempts = attempts
        self._injected = client

    @cached_property
    def client(self) -> EventBridgeClient:
        return self._injected or boto3.client("events")

    def entry(self, detail: EventDetail) -> PutEventsRequestEntryTypeDef:
        return {
            "Source": self.source,
            "DetailType": detail.detail_type(),
            "Detail": json.dumps(detail.model_dump(mode="json"), sort_keys=True),
            "EventBusName": self.bus_name,
        }

    def publish(self, details: Sequence[EventDetail]) -> None:
        entries = [self.entry(detail) for detail in details]
        for start in range(0, len(entries), PUT_EVENTS_CHUNK):
            self._put_chunk(entries[start : start + PUT_EVENTS_CHUNK])

    def _put_chunk(self, entries: list[PutEventsRequestEntryTypeDef]) -> None:
        pending = entries
        for _ in range(self.attempts):
            response = self.client.put_events(Entries=pending)
            if not response.get("FailedEntryCount"):
                return
            results = response["Entries"]
            failed = [
                entry
                for entry, result in zip(pending, results, strict=True)
                if result.get("ErrorCode")
            ]
            codes = sorted({str(r.get("ErrorCode")) for r in results if r.get("ErrorCode")})
            logger.warning(
                "PutEvents refused %d of %d entries: %s", len(failed), len(pending), codes
            )
            pending = failed
        raise EventDeliveryError(
            f"{len(pending)} event(s) not accepted by bus {self.bus_name} "
            f"after {self.attempts} attempts"
        )
