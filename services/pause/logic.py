"""Pausing ingest: disable the schedule, say why in `_state/pause.json`, tell the bus.

The steps are ordered so that a retry after a crash finishes the job and a repeat changes
nothing: (1) disable the schedule rule if it is enabled (the protective step first);
(2) if the record already names this cause, stop here; (3) emit IngestPaused with a
deterministic id (a retry re-sends the same id, consumers drop duplicates); (4) write the
record with a conditional write, re-reading on a lost race (two alarms at once).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from services.pause.models import AlarmStateChangeEvent, PauseReason, PauseRecord
from shared.events import EventSink, IngestPaused
from shared.storage import PreconditionFailedError
from shared.tables import TABLES

WRITE_ATTEMPTS = 5


class PauseState(Protocol):
    def read(self) -> tuple[PauseRecord | None, str | None]:
        """The record and its ETag, or (None, None)."""
        ...

    def write(self, record: PauseRecord, etag: str | None) -> None:
        """Conditional on `etag` (create-only when None); PreconditionFailedError on a race."""
        ...


class Schedule(Protocol):
    def is_enabled(self) -> bool: ...

    def disable(self) -> None: ...

    def enable(self) -> None: ...


@dataclass(frozen=True)
class PauseOutcome:
    rule_disabled: bool  # this call disabled the rule
    recorded: bool  # this call added its reason to the record
    record: PauseRecord

    @property
    def changed(self) -> bool:
        return self.rule_disabled or self.recorded


def table_for_queue(queue_name: str) -> str | None:
    """The table whose queue or DLQ this is (`<prefix>-<table>[-dlq]`), or None."""
    base = queue_name.removesuffix("-dlq")
    matches = [t for t in TABLES if base.endswith(f"-{t}")]
    return max(matches, key=len) if matches else None


def reason_from_alarm(alarm: AlarmStateChangeEvent) -> PauseReason | None:
    """The reason an ALARM gives to pause; None for any other state (nothing to do)."""
    detail = alarm.detail
    if detail.state.value != "ALARM":
        return None
    queues = detail.queue_names()
    queue = queues[0] if queues else None
    return PauseReason(
        cause=detail.alarm_name,
        table=table_for_queue(queue) if queue else None,
        queue_name=queue,
        at=alarm.time,
        message=detail.state.reason or f"{detail.alarm_name} is in ALARM",
    )


def paused_event(reason: PauseReason, schedule_rule: str) -> IngestPaused:
    identity = f"{reason.cause}|{reason.at.isoformat()}"
    return IngestPaused(
        event_id=hashlib.sha256(identity.encode()).hexdigest()[:32],
        cause=reason.cause,
        table=reason.table,
        queue_name=reason.queue_name,
        schedule_rule=schedule_rule,
        paused_at=reason.at,
    )


def pause_ingest(
    reason: PauseReason,
    *,
    state: PauseState,
    schedule: Schedule,
    publisher: EventSink,
    schedule_rule: str,
) -> PauseOutcome:
    disabled = False
    if schedule.is_enabled():
        schedule.disable()
        disabled = True
    for _ in range(WRITE_ATTEMPTS):
        record, etag = state.read()
        active = record if record is not None and record.paused else None
        if active is not None and any(r.cause == reason.cause for r in active.reasons):
            return PauseOutcome(rule_disabled=disabled, recorded=False, record=active)
        publisher.publish([paused_event(reason, schedule_rule)])
        updated = PauseRecord(
            paused=True,
            paused_at=active.paused_at if active else reason.at,
            reasons=[*(active.reasons if active else []), reason],
        )
        try:
            state.write(updated, etag)
        except PreconditionFailedError:
            continue
        return PauseOutcome(rule_disabled=disabled, recorded=True, record=updated)
    raise PreconditionFailedError(f"pause record still contended after {WRITE_ATTEMPTS} tries")


def resume_record(record: PauseRecord | None, now: datetime) -> PauseRecord:
    """The record after an operator resumes: not paused, the last reasons kept for the log."""
    return PauseRecord(
        paused=False,
        paused_at=record.paused_at if record else None,
        resumed_at=now,
        reasons=record.reasons if record else [],
    )
