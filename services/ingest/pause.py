"""Is the ingest paused? A pause record in the bucket, or the schedule rule disabled.

The pause Lambda disables the schedule rule and writes `_state/pause.json`; either one is
enough to stop the ingest reading anything (a run already under way, the local runtime's own
timer and `ingestctl ingest-now` all honour it).
"""

from __future__ import annotations

import json
from functools import cached_property
from typing import TYPE_CHECKING, Protocol

import boto3
from botocore.exceptions import ClientError

from shared.layout import PAUSE_RECORD_KEY
from shared.storage import BucketStore

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient


class ScheduleState(Protocol):
    def disabled(self) -> bool: ...


class EventBridgeSchedule:
    """The state of the EventBridge rule that runs the ingest."""

    def __init__(self, rule_name: str, client: EventBridgeClient | None = None) -> None:
        self.rule_name = rule_name
        self._injected = client

    @cached_property
    def client(self) -> EventBridgeClient:
        return self._injected or boto3.client("events")

    def disabled(self) -> bool:
        try:
            rule = self.client.describe_rule(Name=self.rule_name)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return False  # no schedule at all (a bare local bucket): nothing disabled it
            raise
        return rule.get("State") == "DISABLED"


def pause_reason(store: BucketStore, schedule: ScheduleState | None) -> str | None:
    """Why the ingest must not read now, or None when it may."""
    record = store.get_if_exists(PAUSE_RECORD_KEY)
    if record is not None:
        try:
            body = json.loads(record.data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            # Unreadable, but somebody wrote a pause record: stopping is the safe reading.
            return f"{PAUSE_RECORD_KEY} exists but is not JSON; treated as paused"
        if not isinstance(body, dict) or body.get("paused", True) is not False:
            reason = body.get("reason") if isinstance(body, dict) else None
            return f"{PAUSE_RECORD_KEY} says paused" + (f": {reason}" if reason else "")
    if schedule is not None and schedule.disabled():
        return "the ingest schedule rule is disabled"
    return None
