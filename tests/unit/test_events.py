"""Event details are versioned with deterministic ids; the publisher resends only failures."""

import json
from typing import Any, cast

import pytest

from shared.events import (
    PUT_EVENTS_CHUNK,
    EventDeliveryError,
    EventPublisher,
    HistoryAppended,
    MergeCounts,
    StagingEmpty,
)
from shared.naming import EVENT_SOURCE


def empty_event(batch):
    return StagingEmpty.for_batch(
        table="staff", batch=batch, source_key="staging/staff.json", source_version="v"
    )


def test_event_id_comes_from_type_table_and_batch():
    first, again = empty_event("abc"), empty_event("abc")
    assert first.event_id == again.event_id == "StagingEmpty:staff:abc"
    assert empty_event("abd").event_id != first.event_id
    appended = HistoryAppended.for_batch(
        table="staff",
        batch="abc",
        source_key="k",
        source_version=None,
        latest_key="latest/staff.json",
        history_key=None,
        keys_written=[1],
        counts=MergeCounts(inserted=1),
    )
    assert appended.event_id != first.event_id
    assert appended.schema_version == 1


class FlakyEventBridge:
    """A stand-in for the EventBridge client that refuses chosen entries on chosen calls."""

    def __init__(self, refuse):
        self.refuse = refuse  # call number -> detail batches to refuse
        self.calls = []

    def put_events(self, Entries):
        self.calls.append(Entries)
        refused = self.refuse.get(len(self.calls), set())
        results = [
            {"ErrorCode": "InternalFailure", "ErrorMessage": "x"}
            if json.loads(e["Detail"])["batch"] in refused
            else {"EventId": "id"}
            for e in Entries
        ]
        return {"FailedEntryCount": sum("ErrorCode" in r for r in results), "Entries": results}


def test_publisher_chunks_by_ten_and_resends_only_failed_entries():
    client = FlakyEventBridge(refuse={1: {"b3", "b7"}})
    publisher = EventPublisher("bus", client=cast(Any, client))
    publisher.publish([empty_event(f"b{i}") for i in range(12)])
    sizes = [len(call) for call in client.calls]
    assert sizes == [PUT_EVENTS_CHUNK, 2, 2]
    resent = [json.loads(e["Detail"])["batch"] for e in client.calls[1]]
    assert resent == ["b3", "b7"]
    entry = client.calls[0][0]
    assert (entry["Source"], entry["DetailType"], entry["EventBusName"]) == (
        EVENT_SOURCE,
        "StagingEmpty",
        "bus",
    )


def test_publisher_gives_up_after_bounded_attempts():
    client = FlakyEventBridge(refuse={n: {"b1"} for n in range(1, 10)})
    with pytest.raises(EventDeliveryError, match="1 event"):
        EventPublisher("bus", client=cast(Any, client), attempts=3).publish([empty_event("b1")])
    assert len(client.calls) == 3
